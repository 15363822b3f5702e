"""The names of the run folder's and the sweep folder's files and folders, and of the environment
variables that carry a run folder to another process: asked here by every module that opens them.

    <run dir>/config.yaml       the composed config (written first)
              results.jsonl     one line per finished task (the commit point of a task)
              summary.json      written when the stream finished (a finished run)
              .lock             held while a process writes the run
              state/            resume state, removed when the run finishes:
                config.sha256                the digest of config.yaml as the run started (resume checks it)
                after_task_<i>.pt            learner, scenario and stream FLOPs after task i
                task_<i>.ckpt                task i's mid-task Lightning checkpoint (search=none)
                task_<i>_trial_<k>.ckpt      trial k's mid-trial checkpoint
                search_<i>/trial_<k>.pt      trial k's record; trial_<k>_weights.pt its weights
                search_<i>/start.pt          the task's starting state for search workers

    <sweep dir>/sweep.yaml      the sweep's command line and grid
                jobs.jsonl      every job and its state
                runs/<job>/     each job's run folder
                logs/<job>.log  each job's output
                comparison.csv, comparison.md, comparison.png   the sweep's comparison
                report/index.html   the sweep's report (nevisbench report), written beside them

Standard library only: any layer above `run/` (analysis, sweep, config, the CLI) may import it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG", "RESULTS", "SUMMARY", "LOCK", "STATE", "CONFIG_DIGEST", "SWEEP", "JOBS", "SWEEP_RUNS", "SWEEP_LOGS", "COMPARISON",
           "REPORT", "DDP_RUN_DIR_ENV", "EXACT_RUN_DIR_ENV", "is_run", "comparison_file", "task_state", "task_states",
           "task_checkpoint", "search_dir", "trial_checkpoint", "trial_checkpoints", "trial_record", "trial_weights",
           "trial_weights_files", "trial_kit"]

CONFIG = "config.yaml"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
LOCK = ".lock"
STATE = "state"
CONFIG_DIGEST = "config.sha256"  # in STATE

SWEEP = "sweep.yaml"
JOBS = "jobs.jsonl"
SWEEP_RUNS = "runs"
SWEEP_LOGS = "logs"
COMPARISON = "comparison"  # comparison.csv, comparison.md, comparison.png
REPORT = "report"  # the sweep's report site: report/index.html

# rank 0 names its run folder to the DDP ranks Lightning launches (they reopen it, read only)
DDP_RUN_DIR_ENV = "NEVISBENCH_DDP_RUN_DIR"
# set for a sweep job: its run folder is exactly the one named, never a suffixed one
EXACT_RUN_DIR_ENV = "NEVISBENCH_EXACT_RUN_DIR"


def is_run(path: Path) -> bool:
    """Whether `path` is a finished run's folder (it has its summary)."""
    return (Path(path) / SUMMARY).is_file()


def comparison_file(sweep_dir: Path, suffix: str) -> Path:
    """The sweep's comparison as `suffix` (csv, md, png)."""
    return Path(sweep_dir) / f"{COMPARISON}.{suffix}"


def task_state(state_dir: Path, index: int) -> Path:
    return state_dir / f"after_task_{index}.pt"


def task_states(state_dir: Path) -> dict[int, Path]:
    """The saved after-task states present, by task index."""
    found = {}
    for path in state_dir.glob("after_task_*.pt"):
        number = path.stem.removeprefix("after_task_")
        if number.isdigit():
            found[int(number)] = path
    return found


def task_checkpoint(state_dir: Path, index: int) -> Path:
    return state_dir / f"task_{index}.ckpt"


def search_dir(state_dir: Path, index: int) -> Path:
    return state_dir / f"search_{index}"


def trial_checkpoint(state_dir: Path, index: int, k: int) -> Path:
    return state_dir / f"task_{index}_trial_{k}.ckpt"


def trial_checkpoints(state_dir: Path, index: int) -> list[Path]:
    """Every mid-trial checkpoint of task `index` present."""
    return sorted(state_dir.glob(f"task_{index}_trial_*.ckpt"))


def trial_record(state_dir: Path, index: int, k: int) -> Path:
    return search_dir(state_dir, index) / f"trial_{k}.pt"


def trial_weights(state_dir: Path, index: int, k: int) -> Path:
    return search_dir(state_dir, index) / f"trial_{k}_weights.pt"


def trial_weights_files(state_dir: Path, index: int) -> list[Path]:
    """Every saved trial weights file of task `index` present."""
    return sorted(search_dir(state_dir, index).glob("trial_*_weights.pt"))


def trial_kit(state_dir: Path, index: int) -> Path:
    return search_dir(state_dir, index) / "start.pt"
