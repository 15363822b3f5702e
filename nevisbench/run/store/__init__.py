"""The run folder's store: its layout, results and summary files, scores, search records, and where
results are shown (terminal tables, W&B). Imports nothing else of `run/`: `analysis/` and `sweep/`
import `run/` only through here."""
