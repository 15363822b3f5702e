"""The slurm launcher: submitit submits the sweep's jobs to SLURM as one array; `slurm_states.py`
finds them again (what each recorded job is doing now).

A job preempted or timed out gets SIGUSR2 from SLURM; submitit calls `SweepJob.checkpoint`, which
stops the run (it keeps what it committed) and returns the resubmission that continues it with
`resume=`. `launcher.cluster=local` runs the same code through submitit's local executor.

Each job's SLURM id is recorded in jobs.jsonl, and a job still queued or running is never
submitted again (`slurm_states.engine_states`).
An sbatch refusal (a GPU asked of a CPU-only partition, say) is one line with the fix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape

from nevisbench.errors import ConfigError
from nevisbench.sweep.jobs import Job, SweepFolder, job_command, run_job, stop_process
from nevisbench.sweep.progress import watch
from nevisbench.sweep.slurm_states import EngineJob, SlurmQueue, engine_states, engine_warning, submitit_folder

try:  # submitit is a dependency; imported here so SweepJob can subclass its Checkpointable
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - a broken install; the slurm launcher says so when chosen
    submitit = None  # type: ignore[assignment]
    Checkpointable = object  # type: ignore[assignment,misc]

__all__ = ["SlurmLauncher", "SlurmLauncherConfig", "SweepJob", "submit_slurm", "launch_slurm"]

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




class _OnceFilter(logging.Filter):
    """submitit's watcher warns on every failed `sacct` call; one such warning is enough."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "sacct" not in record.getMessage():
            return True
        seen, _OnceFilter.seen = _OnceFilter.seen, True
        return not seen


logging.getLogger("submitit").addFilter(_OnceFilter())

# sbatch's refusal -> the launcher setting that fixes it
_SBATCH_FIXES = (
    ("generic resource", "the partition has no GPUs: set launcher.gpus_per_node=0 (and trainer=cpu) for a CPU partition"),
    ("node configuration is not available", "no node of the partition has launcher.cpus_per_task={cpus} CPUs, "
                                            "launcher.gpus_per_node={gpus} GPUs and launcher.mem_gb={mem} GB: lower them "
                                            "to what `sinfo -o '%P %c %m %G'` lists"),
    ("memory specification", "lower launcher.mem_gb={mem} to what the nodes have (`sinfo -o '%P %m'`), or set it to null"),
    ("invalid partition", "set launcher.partition to one that `sinfo -s` lists"),
    ("invalid account", "set launcher.account to one of yours (`sacctmgr show assoc user=$USER`)"),
    ("invalid qos", "set launcher.qos to one your account may use (`sacctmgr show qos`)"),
    ("time limit", "lower launcher.timeout_min={timeout} to the partition's limit (`sinfo -o '%P %l'`)"),
)


def _sbatch_error(exc: BaseException, cfg: Any) -> ConfigError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else repr(exc))
    reason = reason.split("error:", 1)[-1].strip()
    fix = next((fix for pattern, fix in _SBATCH_FIXES if pattern in reason.lower()),
               "see `configs/launcher/slurm.yaml` for the launcher.* settings")
    fix = fix.format(cpus=cfg.cpus_per_task, gpus=cfg.gpus_per_node, mem=cfg.mem_gb, timeout=cfg.timeout_min)
    return ConfigError(f"sbatch refused the jobs: {' '.join(reason.split())}; {fix}. Nothing was submitted")


def submit_slurm(folder: SweepFolder, todo: list[Job], cfg: Any) -> list[Any]:
    """Submit the jobs as one array (`map_array`); record every job's engine id in one write."""
    executor = slurm_executor(folder, cfg)
    folder.update_many({job.index: {"state": "pending"} for job in todo})  # none is queued or running
    if cfg.cluster != "local" and shutil.which("sbatch") is None:
        raise ConfigError("launcher=slurm needs SLURM's `sbatch` on PATH (none here); run the sweep on a SLURM "
                          "login node, or use launcher=local (or launcher.cluster=local to test the slurm launcher)")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: one line is ours
            submitted = executor.map_array(SweepJob(str(folder.path)), [job.index for job in todo])
    except Exception as exc:  # submitit's FailedJobError (sbatch's message) or an OSError
        if cfg.cluster == "local":
            raise
        raise _sbatch_error(exc, cfg) from None
    # the jobs may be running already: their states stay as they write them
    folder.update_many({job.index: {"job_id": str(handle.job_id)} for job, handle in zip(todo, submitted, strict=False)})
    return submitted


def _ended_error(job: Job, engine: EngineJob) -> str:
    state = engine.state
    if state.startswith("CANCELLED"):
        return f"cancelled (SLURM job {job.job_id}, {state}) before its run finished; a rerun resumes it"
    if state == "UNKNOWN" and job.state == "pending":  # a queued job leaves the queue unstarted only when cancelled
        return (f"cancelled before it started (SLURM job {job.job_id} left the queue without running, and SLURM keeps "
                "no record of it); a rerun submits it again")
    if state == "UNKNOWN":
        return (f"the SLURM job {job.job_id} is neither queued nor running, and its run did not finish (cancelled? "
                "SLURM keeps no end state for it); a rerun resumes it")
    return f"the submitit job {job.job_id} ended ({state}) without finishing the run; see its submitit log"


def launch_slurm(folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
    where = "submitit's local executor" if cfg.cluster == "local" else f"SLURM partition {cfg.partition or '(default)'}"
    queue = SlurmQueue() if cfg.cluster != "local" else None
    known = engine_states(folder, todo, cfg, queue)
    warning = engine_warning(cfg, known)
    if warning:
        console.print(f"[yellow]{escape(warning)}[/]", soft_wrap=True)
    flying = {index: engine for index, engine in known.items() if engine.in_flight}
    if flying:
        console.print(f"{len(flying)} job(s) still in flight on {where}, not submitted again: " + ", ".join(
            f"{job.name} ({flying[job.index].state} {job.job_id})" for job in todo if job.index in flying),
            highlight=False, soft_wrap=True, markup=False)
    fresh = [job for job in todo if job.index not in flying]
    submitted = submit_slurm(folder, fresh, cfg) if fresh else []
    if fresh:
        console.print(f"launcher=slurm: {len(fresh)} job(s) submitted as one array on {where}; logs in "
                      f"{submitit_folder(folder, cfg)}", highlight=False, markup=False)
    now = time.monotonic()
    watched = {job.index: handle if queue is None else EngineJob(submitit_folder(folder, cfg), str(handle.job_id),
                                                                   queue, submitted=now)
               for job, handle in zip(fresh, submitted, strict=False)}
    watched.update(flying)
    try:
        watch(folder, lambda: all(handle.done() for handle in watched.values()), console)
    except KeyboardInterrupt:
        console.print("Stopped watching; the jobs keep running on the cluster. Run the same command again to "
                      "watch them (nothing is submitted twice), or `nevisbench sweep status "
                      f"{folder.path}`.", highlight=False, markup=False)
        raise
    folder.reload()
    _record_ends(folder, todo, watched)


def _record_ends(folder: SweepFolder, todo: list[Job], watched: dict[int, Any]) -> None:
    """A job killed outright (cancelled, OOM, node failure) never wrote its end: write it."""
    changes: dict[int, dict[str, Any]] = {}
    for job in todo:
        handle = watched.get(job.index)
        if handle is None or job.state == "done":
            continue
        engine = handle if isinstance(handle, EngineJob) else None
        state = engine.state if engine is not None else str(handle.state)
        if job.state in ("running", "pending") or (job.state == "failed" and state.startswith("CANCELLED")):
            error = _ended_error(job, engine) if engine is not None else \
                f"the submitit job {job.job_id} ended ({state}) without finishing the run; see its submitit log"
            changes[job.index] = {"state": "failed", "error": error}
    if changes:
        folder.update_many(changes)


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


class SlurmLauncher:
    """`launcher=slurm` behind the launcher interface (`nevisbench.sweep.launchers.Launcher`)."""

    name = "slurm"
    Config: type = SlurmLauncherConfig

    def check(self, cfg: Any) -> None:
        return None  # its values are checked by their types; sbatch refuses the rest in one line

    def check_devices(self, jobs: list[Job], cfg: Any) -> None:
        for job in jobs:  # one SLURM task on one node; Lightning starts the ranks there
            if job.accelerator != "cpu" and job.devices > cfg.gpus_per_node:
                raise ConfigError(f"Sweep job {job.index} ({job.name}) trains on {job.devices} devices but "
                                  f"launcher.gpus_per_node={cfg.gpus_per_node}; set launcher.gpus_per_node={job.devices}")

    def launch(self, folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
        launch_slurm(folder, todo, cfg, console)

    def states(self, folder: SweepFolder, jobs: list[Job], cfg: Any) -> tuple[dict[int, Any], str | None]:
        engines = engine_states(folder, jobs, cfg)
        return engines, engine_warning(cfg, engines)
