"""The local launcher: a `concurrent.futures` thread pool of N slots on this machine, each slot
running one job subprocess at a time; nevisbench schedules them itself, in `SlotPool`: one slot per
GPU (`CUDA_VISIBLE_DEVICES`) when GPUs exist, each with a share of the cores (`OMP_NUM_THREADS`; the
slot policy is `nevisbench.compute.hardware.slot_envs`, shared with the search pool). A job with
trainer.devices=N (DDP) holds N slots at once, taken together. It has no engine to ask about job
states: the sweep folder's records are all there is."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from nevisbench.compute.hardware import gpu_devices, slot_envs
from nevisbench.errors import ConfigError
from nevisbench.sweep.jobs import Job, SweepFolder, run_job, stop_process
from nevisbench.sweep.progress import watch

__all__ = ["LocalLauncher", "LocalLauncherConfig", "SlotPool", "local_slots"]


@dataclass
class LocalLauncherConfig:
    name: str = "local"
    jobs: int | None = None  # jobs at once; null: one per GPU, else min(4, CPU cores)


def local_slots(jobs: int | None) -> list[dict[str, str]]:
    """One environment per slot (`nevisbench.compute.hardware.slot_envs`, the search pool's policy
    too): a GPU each, round-robin when jobs > GPUs, and a share of the cores; `jobs` defaults to one
    slot per GPU, else min(4, cores)."""
    gpus = gpu_devices()
    return slot_envs(jobs or (len(gpus) if gpus else min(4, os.cpu_count() or 1)), gpus)


class SlotPool:
    """The local launcher's slots; a multi-device (DDP) job holds `devices` of them at once, taken
    together (never one by one, which could leave two jobs each holding half of what they need)."""

    def __init__(self, slots: list[dict[str, str]]) -> None:
        self.free = list(range(len(slots)))
        self.slots = slots
        self.gpu = bool(slots) and "CUDA_VISIBLE_DEVICES" in slots[0]
        self._ready = threading.Condition()

    def need(self, job: Job) -> int:
        """Slots `job` takes: one per device on GPUs, on distinct GPUs (it may not want more GPUs than
        exist), on CPU one per process up to every slot (processes then share the cores)."""
        if self.gpu:
            gpus = len({slot["CUDA_VISIBLE_DEVICES"] for slot in self.slots})
            if job.devices > gpus:
                raise ConfigError(f"Sweep job {job.index} ({job.name}) trains on {job.devices} devices but launcher=local "
                                  f"has {gpus} GPU(s); lower trainer.devices")
            return max(1, job.devices)
        return max(1, min(job.devices, len(self.slots)))

    def _pick(self, count: int) -> list[int] | None:
        """`count` free slots, on distinct GPUs (round-robin slots name a GPU more than once)."""
        picked, seen = [], set()
        for i in self.free:
            gpu = self.slots[i].get("CUDA_VISIBLE_DEVICES")
            if gpu is not None and gpu in seen:
                continue
            seen.add(gpu)
            picked.append(i)
            if len(picked) == count:
                return picked
        return None

    def take(self, count: int) -> list[int]:
        with self._ready:
            self._ready.wait_for(lambda: self._pick(count) is not None)
            taken = self._pick(count)
            if taken is None:  # wait_for returned when _pick found them
                raise RuntimeError(f"no {count} free slots after waiting for them")
            self.free = [i for i in self.free if i not in taken]
            return taken

    def give(self, taken: list[int]) -> None:
        with self._ready:
            self.free.extend(taken)
            self.free.sort()
            self._ready.notify_all()

    def env(self, taken: list[int]) -> dict[str, str]:
        if self.gpu:  # the job sees exactly its GPUs (distinct: see `_pick`)
            return {**self.slots[taken[0]], "CUDA_VISIBLE_DEVICES": ",".join(self.slots[i]["CUDA_VISIBLE_DEVICES"] for i in taken)}
        return dict(self.slots[taken[0]])


def _launch_local(folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
    slots = local_slots(cfg.jobs)
    pool_of_slots = SlotPool(slots)
    needs = {job.index: pool_of_slots.need(job) for job in todo}  # a job that cannot fit: an error before any starts
    processes: set[subprocess.Popen[bytes]] = set()
    stopping = threading.Event()

    def work(job: Job) -> str:
        if stopping.is_set():
            return job.state
        taken = pool_of_slots.take(needs[job.index])
        try:
            if stopping.is_set():
                return job.state
            return run_job(folder, job, env=pool_of_slots.env(taken), on_process=processes.add)
        finally:
            pool_of_slots.give(taken)

    where = f"GPU {', '.join(s['CUDA_VISIBLE_DEVICES'] for s in slots)}" if pool_of_slots.gpu \
        else f"CPU, {slots[0]['OMP_NUM_THREADS']} thread(s) each"
    console.print(f"launcher=local: {len(todo)} job(s), {len(slots)} at a time ({where})", highlight=False)
    pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="sweep-job")
    futures: list[Future[str]] = [pool.submit(work, job) for job in todo]
    try:
        watch(folder, lambda: all(f.done() for f in futures), console)
    except KeyboardInterrupt:
        stopping.set()
        for process in list(processes):
            stop_process(process, grace_s=30)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        future.result()  # a bug in the sweep itself (not in a job) is not swallowed


class LocalLauncher:
    """`launcher=local` behind the launcher interface (`nevisbench.sweep.launchers.Launcher`)."""

    name = "local"
    Config: type = LocalLauncherConfig

    def check(self, cfg: Any) -> None:
        if cfg.jobs is not None and cfg.jobs < 1:
            raise ConfigError(f"Invalid value for 'launcher.jobs': {cfg.jobs}. It must be >= 1 (or null)")

    def check_devices(self, jobs: list[Job], cfg: Any) -> None:
        pool = SlotPool(local_slots(cfg.jobs))
        for job in jobs:
            pool.need(job)

    def launch(self, folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
        _launch_local(folder, todo, cfg, console)

    def states(self, folder: SweepFolder, jobs: list[Job], cfg: Any) -> tuple[dict[int, Any], str | None]:
        return {}, None  # no engine: a job's state is its record in jobs.jsonl
