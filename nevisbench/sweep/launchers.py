"""Launchers: how a sweep's jobs run.

- `local`: a `concurrent.futures` thread pool of N slots, each slot running one job subprocess at a
  time; nevisbench schedules them itself, in `SlotPool`: one slot per GPU (`CUDA_VISIBLE_DEVICES`)
  when GPUs exist, each with a share of the cores (`OMP_NUM_THREADS`; the slot policy is
  `nevisbench.compute.hardware.slot_envs`, shared with the search pool). A job with
  trainer.devices=N (DDP) holds N slots at once, taken together.
- `slurm`: submitit (`AutoExecutor`), the jobs as one array: `slurm.py` (requeue on preemption,
  finding the jobs again with sacct/squeue, sbatch's refusals). `launcher.cluster=local` runs the
  same code through submitit's local executor (no SLURM needed).
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from nevisbench.compute.hardware import gpu_devices, slot_envs
from nevisbench.config import config_dir
from nevisbench.errors import ConfigError, choice_error, did_you_mean
from nevisbench.sweep.jobs import Job, SweepFolder, run_job, stop_process
from nevisbench.sweep.progress import watch
from nevisbench.sweep.slurm import launch_slurm

__all__ = ["LAUNCHERS", "LocalLauncherConfig", "SlurmLauncherConfig", "load_launcher", "launch",
           "local_slots", "SlotPool", "check_job_devices"]


@dataclass
class LocalLauncherConfig:
    name: str = "local"
    jobs: int | None = None  # jobs at once; null: one per GPU, else min(4, CPU cores)


@dataclass
class SlurmLauncherConfig:
    name: str = "slurm"
    cluster: str | None = None  # null: SLURM; local: submitit's local executor (testing without SLURM)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float | None = 32
    array_parallelism: int = 64  # array tasks running at once
    max_num_timeout: int = 3  # requeues after timeouts (preemptions requeue without counting)
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit, to stop and requeue cleanly
    folder: str | None = None  # submitit's logs and pickles; null: <sweep_dir>/submitit
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option


LAUNCHERS: dict[str, type] = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def load_launcher(sweep: dict[str, str], saved: dict[str, Any] | None = None) -> Any:
    """The launcher config: `configs/launcher/<name>.yaml` on its schema, then `launcher.*` overrides.
    `saved` (a resumed sweep's launcher) is the base when the command names no launcher."""
    name = sweep.get("launcher") or (saved or {}).get("name") or "local"
    if name not in LAUNCHERS:
        raise choice_error("launcher", name, LAUNCHERS)
    node = OmegaConf.structured(LAUNCHERS[name])
    try:
        node = OmegaConf.merge(node, OmegaConf.load(config_dir() / "launcher" / f"{name}.yaml").launcher)
        if saved and saved.get("name") == name and "launcher" not in sweep:
            node = OmegaConf.merge(node, saved)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Launcher config '{name}': {' '.join(str(exc).split())}") from None
    valid = [str(k) for k in node.keys() if k != "name"]
    for key, value in sweep.items():
        if not key.startswith("launcher."):
            continue
        sub = key.partition(".")[2]
        if sub.split(".")[0] not in valid:
            raise ConfigError(f"Unknown config key '{key}': '{sub}' is not a key of launcher={name}. "
                              f"Valid: {', '.join(valid)}.{did_you_mean(sub, valid)}")
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([f"{sub}={value}"]))
        except OmegaConfBaseException:
            kind = getattr(LAUNCHERS[name], "__annotations__", {}).get(sub, "the right type")
            raise ConfigError(f"Invalid value for '{key}': '{value}' is not {kind}") from None
    if name == "local" and node.jobs is not None and node.jobs < 1:
        raise ConfigError(f"Invalid value for 'launcher.jobs': {node.jobs}. It must be >= 1 (or null)")
    return node


# -- local: a thread pool of slots, each running job subprocesses -----------------------------------
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


def check_job_devices(jobs: list[Job], cfg: Any) -> None:
    """Refuse, before anything starts, a multi-device (DDP) job the launcher cannot give its devices."""
    if cfg.name == "local":
        pool = SlotPool(local_slots(cfg.jobs))
        for job in jobs:
            pool.need(job)
        return
    for job in jobs:  # one SLURM task on one node; Lightning starts the ranks there
        if job.accelerator != "cpu" and job.devices > cfg.gpus_per_node:
            raise ConfigError(f"Sweep job {job.index} ({job.name}) trains on {job.devices} devices but "
                              f"launcher.gpus_per_node={cfg.gpus_per_node}; set launcher.gpus_per_node={job.devices}")


def launch(folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
    """Run `todo` with the configured launcher until every job has ended."""
    if not todo:
        return
    check_job_devices(todo, cfg)
    if cfg.name == "local":
        _launch_local(folder, todo, cfg, console)
    else:
        launch_slurm(folder, todo, cfg, console)
