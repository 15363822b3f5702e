"""The run folder's store: its results and summary files (their names: `nevisbench.layout`), scores
and the metrics a run is scored with, search records, and where results are shown (terminal tables,
W&B). Imports nothing else of `run/`: `analysis/` and `sweep/` import `run/` only through here."""
