"""Sweeps: many runs from one command (`nevisbench sweep`), launched by existing engines, and
their comparison (`nevisbench compare`).

`grid.py` Hydra's override grammar -> jobs; `jobs.py` the sweep folder and one job's subprocess;
`launchers.py` the local launcher (a thread pool of slots running job subprocesses) and submitit
(SLURM); `progress.py` live lines and the status table; `compare.py` tables and figures across
runs, `compare_cli.py` the `nevisbench compare` command; `sweeper.py` the `sweep` command itself.
"""

from nevisbench.sweep.compare import collect, compare_rows, plot_comparison
from nevisbench.sweep.grid import parse_sweep
from nevisbench.sweep.sweeper import run_sweep, sweep_command, sweep_status

__all__ = ["parse_sweep", "run_sweep", "sweep_command", "sweep_status", "collect", "compare_rows", "plot_comparison"]
