"""Launchers: how a sweep's jobs run.

- `local`: a `concurrent.futures` thread pool of N slots, each slot running one job subprocess at a
  time; nevisbench schedules them itself, in `SlotPool`: one slot per GPU (`CUDA_VISIBLE_DEVICES`)
  when GPUs exist, each with a share of the cores (`OMP_NUM_THREADS`; the slot policy is
  `nevisbench.compute.hardware.slot_envs`, shared with the search pool). A job with
  trainer.devices=N (DDP) holds N slots at once, taken together.
- `slurm`: submitit (`AutoExecutor`), the jobs as one array; a job preempted or timed out gets
  SIGUSR2 from SLURM, submitit calls `SweepJob.checkpoint`, which stops the run (it keeps what it
  committed) and returns the resubmission that continues it with `resume=`. `launcher.cluster=local`
  runs the same code through submitit's local executor (no SLURM needed). Each job's submitit id
  is recorded in jobs.jsonl; a rerun asks submitit for those jobs' states first (`engine_states`)
  and submits again only the jobs that are not queued or running any more.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from nevisbench.compute.hardware import gpu_devices, slot_envs
from nevisbench.errors import ConfigError, choice_error, did_you_mean
from nevisbench.sweep.jobs import Job, SweepFolder, run_job, stop_process
from nevisbench.sweep.progress import watch

try:  # submitit is a dependency; imported here so SweepJob can subclass its Checkpointable
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - a broken install; the slurm launcher says so when chosen
    submitit = None
    Checkpointable = object  # type: ignore[assignment,misc]

__all__ = ["LAUNCHERS", "LocalLauncherConfig", "SlurmLauncherConfig", "load_launcher", "launch", "SweepJob",
           "local_slots", "SlotPool", "check_job_devices", "IN_FLIGHT", "engine_states", "engine_warning", "EngineJob"]


@dataclass
class LocalLauncherConfig:
    name: str = "local"
    jobs: Optional[int] = None  # jobs at once; null: one per GPU, else min(4, CPU cores)


@dataclass
class SlurmLauncherConfig:
    name: str = "slurm"
    cluster: Optional[str] = None  # null: SLURM; local: submitit's local executor (testing without SLURM)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: Optional[float] = 32
    array_parallelism: int = 64  # array tasks running at once
    max_num_timeout: int = 3  # requeues after timeouts (preemptions requeue without counting)
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit, to stop and requeue cleanly
    folder: Optional[str] = None  # submitit's logs and pickles; null: <sweep_dir>/submitit
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option


LAUNCHERS: dict[str, type] = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def load_launcher(sweep: dict[str, str], saved: dict[str, Any] | None = None) -> Any:
    """The launcher config: `configs/launcher/<name>.yaml` on its schema, then `launcher.*` overrides.
    `saved` (a resumed sweep's launcher) is the base when the command names no launcher."""
    from nevisbench.config import config_dir

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
    valid = [k for k in node.keys() if k != "name"]
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


# -- slurm (and submitit's local executor) ---------------------------------------------------------
class SweepJob(Checkpointable):  # type: ignore[misc,valid-type]
    """What submitit runs on a node: job `index` of the sweep in `sweep_dir`, as a subprocess.

    On preemption or timeout submitit calls `checkpoint`: the run is stopped (its committed tasks and
    mid-task checkpoints stay), and the resubmission runs `nevisbench run resume=<run folder>`.
    """

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._preempted = False

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_dir": self.sweep_dir}  # no live process in a pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep_dir"])  # type: ignore[misc]

    def __call__(self, index: int, resume: bool = False) -> str:
        folder = SweepFolder.open(Path(self.sweep_dir))
        (job,) = [j for j in folder.jobs if j.index == index]
        if resume:
            print(f"requeued: job {job.name} continues from {folder.run_dir(job)}", flush=True)
        return run_job(folder, job, on_process=self._keep, requeued=lambda: self._preempted)

    def _keep(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    def checkpoint(self, index: int, resume: bool = False) -> DelayedSubmission:
        """Stop the run and resubmit it as a resumed run (`resume=<run folder>`)."""
        self._preempted = True
        if self._process is not None:
            stop_process(self._process, grace_s=30)
        return DelayedSubmission(SweepJob(self.sweep_dir), index, resume=True)

    def command(self, index: int, resume: bool = False) -> list[str]:
        """The `nevisbench run` arguments this call would launch now."""
        from nevisbench.sweep.jobs import job_command

        folder = SweepFolder.open(Path(self.sweep_dir))
        (job,) = [j for j in folder.jobs if j.index == index]
        return job_command(folder, job)


def slurm_executor(folder: SweepFolder, cfg: Any) -> Any:
    if submitit is None:
        raise ConfigError("launcher=slurm needs submitit: pip install 'submitit>=1.5'")
    executor = submitit.AutoExecutor(folder=submitit_folder(folder, cfg) / "%j", cluster=cfg.cluster,
                                     slurm_max_num_timeout=cfg.max_num_timeout)
    extra = {f"slurm_{k}": v for k, v in (("partition", cfg.partition), ("account", cfg.account), ("qos", cfg.qos),
                                          ("constraint", cfg.constraint)) if v}
    additional = OmegaConf.to_container(cfg.additional_parameters)
    if additional:
        extra["slurm_additional_parameters"] = additional
    executor.update_parameters(name=f"nevisbench-{folder.name}", timeout_min=cfg.timeout_min, gpus_per_node=cfg.gpus_per_node,
                               cpus_per_task=cfg.cpus_per_task, mem_gb=cfg.mem_gb, slurm_array_parallelism=cfg.array_parallelism,
                               slurm_signal_delay_s=cfg.signal_delay_s, **extra)
    return executor


def submitit_folder(folder: SweepFolder, cfg: Any) -> Path:
    return Path(cfg.folder) if cfg.folder else folder.path / "submitit"


def submit_slurm(folder: SweepFolder, todo: list[Job], cfg: Any) -> list[Any]:
    """Submit the jobs as one array (`map_array`); record each job's engine id."""
    executor = slurm_executor(folder, cfg)
    for job in todo:  # none of them is queued or running (see engine_states)
        folder.update(job, state="pending")
    submitted = executor.map_array(SweepJob(str(folder.path)), [job.index for job in todo])
    for job, handle in zip(todo, submitted):
        folder.update(job, job_id=str(handle.job_id))  # the job itself may be running already: state stays
    return submitted


# SLURM states (sacct) of a job that is queued or running: not to be submitted again. Any other
# state (COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED without requeue,
# BOOT_FAIL, DEADLINE) or none (UNKNOWN: sacct has no such job) means the job has ended.
IN_FLIGHT = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                       "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"})


class EngineJob:
    """A job submitted by an earlier sweep process, found again by its recorded submitit id.

    SLURM: submitit's `SlurmJob` (its watcher asks `sacct` for all of them in one call). submitit's
    local executor: its `LocalJob` knows a finished job by its result file; a job of another (dead)
    sweep process has no process handle in submitit, so a live job is its controller process (the
    local job id is the controller's pid) still running `submitit.local._local`.
    """

    def __init__(self, logs: Path, job_id: str, cluster: str | None) -> None:
        from submitit.local.local import LocalJob
        from submitit.slurm.slurm import SlurmJob

        self.job_id = job_id
        self.local = cluster == "local"
        self.handle = (LocalJob if self.local else SlurmJob)(folder=logs / "%j", job_id=job_id)

    @property
    def state(self) -> str:
        """The engine's state: a SLURM state word (`RUNNING`, `FAILED`, `UNKNOWN`...); for the
        local executor `RUNNING`, `FINISHED` or `ABSENT`."""
        if not self.local:
            return self.handle.watcher.get_state(self.job_id, mode="standard").split()[0].upper()
        if self.handle.state == "FINISHED":
            return "FINISHED"
        try:
            command = Path(f"/proc/{int(self.job_id)}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return "ABSENT"
        return "RUNNING" if b"submitit.local._local" in command else "ABSENT"  # a zombie has no command line

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    def done(self) -> bool:
        return not self.in_flight


def engine_states(folder: SweepFolder, jobs: list[Job], cfg: Any) -> dict[int, EngineJob]:
    """The jobs (of `jobs`) that carry a submitit id, found again with the engine's state fresh:
    one `sacct` call for all of them on SLURM."""
    if cfg.name != "slurm" or submitit is None:
        return {}
    logs = submitit_folder(folder, cfg)
    found = {job.index: EngineJob(logs, job.job_id, cfg.cluster) for job in jobs if job.job_id}
    if found and cfg.cluster != "local":
        next(iter(found.values())).handle.watcher.update()  # one sacct for every registered job
    return found


def engine_warning(cfg: Any, found: dict[int, EngineJob]) -> str | None:
    """Why the engine's states cannot be trusted, if they cannot (SLURM without `sacct`)."""
    if found and cfg.cluster != "local" and shutil.which("sacct") is None:
        return ("Cannot ask SLURM about the jobs submitted before (no `sacct` on PATH): their state shows as "
                "UNKNOWN and a rerun submits them again (a run still running is waited for through its run "
                "folder's lock).")
    return None


def _launch_slurm(folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
    where = "submitit's local executor" if cfg.cluster == "local" else f"SLURM partition {cfg.partition or '(default)'}"
    known = engine_states(folder, todo, cfg)
    warning = engine_warning(cfg, known)
    if warning:
        console.print(f"[yellow]{warning}[/]", soft_wrap=True)
    flying = {index: engine for index, engine in known.items() if engine.in_flight}
    if flying:
        console.print(f"{len(flying)} job(s) still in flight on {where}, not submitted again: " + ", ".join(
            f"{job.name} ({flying[job.index].state} {job.job_id})" for job in todo if job.index in flying),
            highlight=False, soft_wrap=True)
    fresh = [job for job in todo if job.index not in flying]
    submitted = submit_slurm(folder, fresh, cfg) if fresh else []
    if fresh:
        console.print(f"launcher=slurm: {len(fresh)} job(s) submitted as one array on {where}; logs in "
                      f"{submitit_folder(folder, cfg)}", highlight=False)
    handles = [*submitted, *flying.values()]
    try:
        watch(folder, lambda: all(handle.done() for handle in handles), console)
    except KeyboardInterrupt:
        console.print("Stopped watching; the jobs keep running on the cluster. Run the same command again to "
                      "watch them (nothing is submitted twice), or `nevisbench sweep status "
                      f"{folder.path}`.", highlight=False)
        raise
    folder.reload()
    ended = [*zip(fresh, submitted), *((job, flying[job.index]) for job in todo if job.index in flying)]
    for job, handle in ended:  # a job killed outright (OOM, node failure) never wrote its end
        if job.state in ("running", "pending"):
            folder.update(job, state="failed", error=f"the submitit job {job.job_id} ended ({handle.state}) "
                                                     "without finishing the run; see its submitit log")


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
        _launch_slurm(folder, todo, cfg, console)
