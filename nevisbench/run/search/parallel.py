"""`search.parallel=N`: the trials of a task on a process pool, N at once, one per GPU or CPU slot.

The pool is the standard library's `concurrent.futures.ProcessPoolExecutor` (spawn start method),
never a scheduler of our own. Each worker takes one slot when it starts, before torch is imported, by
the slot policy the sweep's local launcher uses too (`nevisbench.compute.hardware.slot_envs`:
`OMP_NUM_THREADS` = cores / N, and a GPU each through `CUDA_VISIBLE_DEVICES` on CUDA).

The parent writes the task's starting state once (`<run>/state/search_<task>/start.pt`: the run's
learner, the scenario with its starting backbones, the config, the task's spec); each trial job
(`nevisbench.run.search.execute.trial_job`) builds a `TaskTrainer` from it and trains the trial exactly as
the in-process search does (same seed, same starting state, its own FLOP meter), then saves its
record and weights through `TaskSearch.save`, like a finished trial. The parent then reads the trials back as a resume does. A trial's seed
does not depend on the worker that ran it.

Nothing this module imports at its top loads torch (`compute.hardware` loads it lazily): a worker's
slot is set before torch loads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, cast

from nevisbench.compute.hardware import gpu_devices, slot_envs
from nevisbench.errors import RunFailed

__all__ = ["search_slots", "run_trials", "stopping", "die_with_parent"]


def search_slots(parallel: int, cuda: bool) -> list[dict[str, str]]:
    """One environment per worker, by the slot policy the sweep's local launcher uses too
    (`nevisbench.compute.hardware.slot_envs`); on CUDA with no GPU listed, every worker gets GPU 0."""
    return slot_envs(parallel, (gpu_devices() or ["0"]) if cuda else [])


_STOP: Any = None  # set by the parent on Ctrl-C: a worker starts no further trial


def die_with_parent() -> None:
    """Linux: the kernel kills this process (a search worker, a DDP rank > 0) when the process that
    started it dies (SIGKILL, out of memory), as it would kill an in-process trial: its mid-trial
    checkpoint stays, no record is written, no orphan goes on writing into the run folder while it
    is resumed or holding a GPU (NCCL notices a dead peer only at its timeout). Best effort elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _take_slot(slots: Any, stop: Any) -> None:
    """Pool initializer: this worker's slot, set before torch is imported."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.default_int_handler)  # stoppable by _stop_workers, even if SIGINT came in ignored
    die_with_parent()
    os.environ.update(slots.get())


def stopping() -> bool:
    """In a worker: whether the parent was interrupted (a job queued before the Ctrl-C is not started)."""
    return _STOP is not None and _STOP.is_set()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C: ask every worker to stop its trial (Lightning stops at the next step; a finished
    trial's record is already saved, an unfinished one keeps its mid-trial checkpoint)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            os.kill(process.pid, signal.SIGINT)
        except (ProcessLookupError, OSError):
            pass


def run_trials(job: Callable[[dict[str, Any]], int], kit_path: Path, run_dir: Path,
               todo: list[tuple[int, dict[str, Any]]], slots: list[dict[str, str]], describe: str) -> None:
    """Run the trials `todo` ((number, overrides) pairs) on a pool of len(slots) workers, each
    calling `job` (a module-level function: `nevisbench.run.search.execute.trial_job`), which saves its
    trial. A trial that raises (a plugin error) is raised here once the trials in flight have
    finished (the lowest-numbered trial's error when several fail); trials not started are
    cancelled, finished ones are kept for a resume."""
    context = multiprocessing.get_context("spawn")
    queue, stop = context.Queue(), context.Event()
    for slot in slots:
        queue.put(slot)
    pool = ProcessPoolExecutor(max_workers=len(slots), mp_context=context, initializer=_take_slot,
                               initargs=(queue, stop))
    futures: dict[Future[int], int] = {}
    try:
        for k, overrides in todo:
            futures[pool.submit(job, {"kit": str(kit_path), "run_dir": str(run_dir), "k": k,
                                             "overrides": overrides})] = k
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done if not f.cancelled()):
            for future in futures:
                future.cancel()  # not started: not run; in flight: finishes and is kept
            wait(futures)
    except KeyboardInterrupt:
        stop.set()  # a job already handed to a worker is not started
        for future in futures:
            future.cancel()
        _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        queue.close()
    failed = sorted(((k, f.exception()) for f, k in futures.items() if not f.cancelled() and f.exception() is not None),
                    key=lambda item: item[0])
    if not failed:
        return
    k, exc = failed[0]
    if isinstance(exc, BrokenProcessPool):
        raise RunFailed(f"a search worker of {describe} ended abruptly (killed, or out of memory) during the trials; "
                        f"the finished trials are kept: resume with nevisbench run resume={run_dir}") from None
    raise cast(BaseException, exc)  # not None: `failed` keeps only futures that raised
