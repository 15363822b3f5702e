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
"""

from __future__ import annotations

import os
from typing import Any

from nevisbench.compute.hardware import world_size

__all__ = ["RUN_DIR_ENV", "world_size", "local_rank", "device_index", "is_writer"]

RUN_DIR_ENV = "NEVISBENCH_DDP_RUN_DIR"
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
