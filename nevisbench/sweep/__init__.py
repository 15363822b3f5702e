"""Sweeps: many runs from one command (`nevisbench sweep`), launched by existing engines.

`grid.py` Hydra's override grammar -> jobs; `jobs.py` the sweep folder and one job's subprocess;
`records.py` reading `sweep.yaml` and `jobs.jsonl` back, checked; `launchers.py` the launcher
interface and its registry; `local.py` the local launcher (a thread pool of slots running job
subprocesses); `slurm.py` the SLURM launcher (submitit) and `slurm_states.py` its jobs found again
(sacct/squeue); `progress.py` live lines and the status table; `sweeper.py` the command itself, which ends
by writing the sweep's comparison with `nevisbench.analysis` (the tables and figures of
`nevisbench compare`).
"""

from nevisbench.sweep.grid import parse_sweep
from nevisbench.sweep.sweeper import run_sweep, sweep_command, sweep_status

__all__ = ["parse_sweep", "run_sweep", "sweep_command", "sweep_status"]
