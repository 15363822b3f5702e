"""Multi-device runs with Lightning's DDP (`trainer.devices=N`, one node).

Lightning launches the N-1 extra processes at the first `trainer.fit` by re-running the same
command with `LOCAL_RANK` set; every process then runs the whole stream in lockstep (the same
tasks, trials, plans and evaluations, all seeded alike). What makes that one run and not N:
- `data.batch_size` is the GLOBAL batch: every rank draws the same batch (indices and augmentation)
  and trains on its own contiguous 1/N slice, so N processes see exactly the samples one process
  would, and the step count does not depend on N;
- the FLOP meter sums every rank's counted step (all-reduce), so budgets and the curve count the
  global compute; evaluation is replicated on every rank (each has the score without a broadcast)
  and charged once, as a one-device run spends it;
- only rank 0 writes: the run folder (results, state, checkpoints, summary) and the loggers. The
  other ranks read the folder rank 0 created (its path travels in `RUN_DIR_ENV`) and never lock it.

A rank that dies (SIGKILL, out of memory, its own error) ends the run with one line naming it, its
exit signal or code, and the resume command, whichever way rank 0 learns of it: a collective that
fails in rank 0 (`lost_rank`, read by the runner), or Lightning's process observer, which SIGKILLs
rank 0 right after logging which child ended, so that no handler of ours would run after it: a
logging handler on the observer's logger (`watch_ranks`; logging is the observer's only hook) prints
the line before the kill.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nevisbench import layout
from nevisbench.compute.hardware import world_size

__all__ = ["RUN_DIR_ENV", "world_size", "local_rank", "device_index", "is_writer", "lost_rank", "rank_lost_error",
           "watch_ranks"]

RUN_DIR_ENV = layout.DDP_RUN_DIR_ENV
# `world_size` (a device fact: how many processes a trainer config trains with) lives in
# nevisbench.compute.hardware, where config validation reads it too; it is re-exported here


def local_rank(trainer_cfg: Any) -> int:
    """This process's rank: 0 for the launching process (and every one-device run)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size(trainer_cfg) > 1 else 0


def device_index(trainer_cfg: Any) -> int:
    """The CUDA device index this process trains on (`trainer.devices=[1,3]`: rank 1 -> cuda:3)."""
    rank = local_rank(trainer_cfg)
    devices = trainer_cfg.devices
    return int(list(devices)[rank]) if not isinstance(devices, (int, str)) else rank


def is_writer(trainer_cfg: Any) -> bool:
    """Whether this process writes the run folder and the loggers (rank 0)."""
    return local_rank(trainer_cfg) == 0


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def lost_rank(procs: list[subprocess.Popen], *, wait: float = 1.0) -> str | None:
    """Which launched rank ended with a failure ('rank 1 (pid 123, killed by SIGKILL)'), waiting up to
    `wait` seconds for one to end (rank 0 can notice a broken collective before the peer is reaped);
    None when every rank is still running or ended cleanly. `procs[i]` is rank i + 1."""
    deadline = time.monotonic() + wait
    while True:
        for rank, proc in enumerate(procs, start=1):
            if proc.poll() not in (None, 0):
                return f"rank {rank} (pid {proc.pid}, {_how(proc.returncode)})"
        if not procs or time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def rank_lost_error(lost: str, run_dir: Path, cause: str | None = None) -> str:
    """The one line a run stopped by a lost rank ends with: which rank, how, and the resume command."""
    then = f"; rank 0 then stopped: {cause.splitlines()[0][:300]}" if cause else ""
    return (f"DDP {lost} died{then}. Every rank is stopped; finished tasks are kept in {run_dir}. "
            f"Resume with: nevisbench run resume={run_dir}")


# Lightning's observer logs '[rank: N] Child process with PID P terminated with code C. ...' just before it kills
_OBSERVER_LOGGER = "lightning.fabric.strategies.launchers.subprocess_script"
_ENDED = re.compile(r"rank: (\d+)\] Child process with PID (\d+) terminated with code (-?\d+)")


class _RankWatch(logging.Handler):
    """Turns the observer's last log line into ours (rank 0's stderr), before it kills this process."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(logging.INFO)
        self.run_dir = run_dir

    def emit(self, record: logging.LogRecord) -> None:
        found = _ENDED.search(record.getMessage())
        if found is None:
            return
        rank, pid, code = found.groups()
        sys.stderr.write(f"error: {rank_lost_error(f'rank {rank} (pid {pid}, {_how(int(code))})', self.run_dir)}\n")
        sys.stderr.flush()


def watch_ranks(run_dir: Path) -> None:
    """In rank 0 of a DDP run: say which rank died and how to resume if Lightning's observer stops the
    run (see the module docstring). Installed once per process; the last run's folder is named."""
    logger = logging.getLogger(_OBSERVER_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _RankWatch)]:
        logger.removeHandler(handler)
    logger.addHandler(_RankWatch(Path(run_dir)))
    logger.setLevel(logging.INFO)  # the harness quiets Lightning's info logs (quiet_lightning), not this one
    logger.propagate = False  # ... and nothing else prints it
