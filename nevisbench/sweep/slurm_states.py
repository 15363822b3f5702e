"""What the SLURM launcher's recorded jobs are doing now: `SlurmQueue` asks `sacct` once for all of
them, and where it has no answer (accounting disabled: "Slurm accounting storage is disabled", or a
job it does not know yet) `squeue` once, which knows every queued and running job; `EngineJob` is
one job found again (on submitit's local executor, by its result file or its controller process).
So a job still queued or running is never submitted again, with or without accounting; without it
the sweep warns once that a job no longer queued has no end state (`engine_warning`)."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nevisbench.sweep.jobs import Job, SweepFolder

if TYPE_CHECKING:
    from submitit.local.local import LocalJob

try:  # submitit is a dependency; without it (a broken install) no job has an engine to ask
    import submitit
except ImportError:  # pragma: no cover
    submitit = None  # type: ignore[assignment]

__all__ = ["IN_FLIGHT", "EngineJob", "SlurmQueue", "engine_states", "engine_warning", "submitit_folder"]

# SLURM states of a job that is queued or running: not to be submitted again. Any other state
# (COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED without requeue,
# BOOT_FAIL, DEADLINE) or none (UNKNOWN: neither sacct nor squeue knows it) means the job has ended.
IN_FLIGHT = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                       "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"})
FRESH_S = 60.0  # a job this process just submitted that SLURM does not list yet is still taken as queued


def submitit_folder(folder: SweepFolder, cfg: Any) -> Path:
    return Path(cfg.folder) if cfg.folder else folder.path / "submitit"


class SlurmQueue:
    """The SLURM states of recorded job ids: one `sacct` call for all of them, then, for those it
    has no answer for (accounting disabled, or not recorded yet), one `squeue` call."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.states: dict[str, str] = {}
        self.accounting: bool | None = None  # False: sacct answered that accounting is disabled
        self.sacct_note = ""
        self._asked = float("-inf")

    def state(self, job_id: str, every_s: float = 5.0) -> str:
        self.ids.add(job_id)
        if job_id not in self.states or time.monotonic() - self._asked >= every_s:
            self.refresh()
        return self.states.get(job_id, "UNKNOWN")

    def refresh(self) -> None:
        self._asked = time.monotonic()
        found = self._sacct() if self.accounting is not False and shutil.which("sacct") else {}
        if any(found.get(i, "UNKNOWN") == "UNKNOWN" for i in self.ids) and shutil.which("squeue"):
            queued = self._squeue()
            found.update({i: queued[i] for i in self.ids if found.get(i, "UNKNOWN") == "UNKNOWN" and i in queued})
        self.states = {i: found.get(i, "UNKNOWN") for i in self.ids}

    def _sacct(self) -> dict[str, str]:
        from submitit.slurm.slurm import SlurmInfoWatcher

        command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
        for base in sorted({i.split("_")[0] for i in self.ids}):
            command += ["-j", base]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            self.sacct_note = str(exc)
            return {}
        if done.returncode != 0 or "accounting storage is disabled" in (done.stdout + done.stderr).lower():
            self.accounting = False
            self.sacct_note = " ".join((done.stderr or done.stdout).split())[:200]
            return {}
        self.accounting = True
        info = SlurmInfoWatcher().read_info(done.stdout)  # submitit's parser (array ranges included)
        return {i: (info[i].get("State") or "UNKNOWN").split()[0].upper() for i in self.ids if i in info}

    def _squeue(self) -> dict[str, str]:
        try:
            done = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", getpass.getuser()], capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return {}
        rows = (line.split("|") for line in done.stdout.splitlines() if "|" in line)
        return {job_id.strip(): state.strip().upper() for job_id, state in rows} if done.returncode == 0 else {}


class EngineJob:
    """A job found again by its recorded submitit id, with its engine's state.

    SLURM: `SlurmQueue` (sacct, else squeue). submitit's local executor: its `LocalJob` knows a
    finished job by its result file; a job of another (dead) sweep process has no process handle
    in submitit, so a live job is its controller process (the local job id is the controller's
    pid) still running `submitit.local._local`.
    """

    def __init__(self, logs: Path, job_id: str, queue: SlurmQueue | None, *, submitted: float | None = None) -> None:
        self.job_id = job_id
        self.queue = queue
        self.submitted = submitted  # when this process submitted it (None: an earlier sweep did)
        self.handle: LocalJob | None = None
        if queue is None:
            from submitit.local.local import LocalJob

            self.handle = LocalJob(folder=logs / "%j", job_id=job_id)

    @property
    def state(self) -> str:
        """A SLURM state word (`RUNNING`, `CANCELLED`, `UNKNOWN`...); for the local executor
        `RUNNING`, `FINISHED` or `ABSENT`."""
        if self.queue is not None:
            state = self.queue.state(self.job_id)
            fresh = self.submitted is not None and time.monotonic() - self.submitted < FRESH_S
            return "PENDING" if state == "UNKNOWN" and fresh else state
        if self.handle is not None and self.handle.state == "FINISHED":
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


def engine_states(folder: SweepFolder, jobs: list[Job], cfg: Any, queue: SlurmQueue | None = None) -> dict[int, EngineJob]:
    """The jobs (of `jobs`) that carry a submitit id, found again with the engine's state fresh:
    one `sacct` (and at most one `squeue`) call for all of them on SLURM."""
    if cfg.name != "slurm" or submitit is None:
        return {}
    logs = submitit_folder(folder, cfg)
    queue = queue or (SlurmQueue() if cfg.cluster != "local" else None)
    found = {job.index: EngineJob(logs, job.job_id, queue) for job in jobs if job.job_id}
    if queue is not None and found:
        queue.ids |= {engine.job_id for engine in found.values()}
        queue.refresh()
    return found


def engine_warning(cfg: Any, found: dict[int, EngineJob]) -> str | None:
    """Why the engine's end states cannot be known: SLURM without `sacct`, or with accounting disabled."""
    if not found or cfg.cluster == "local":
        return None
    if shutil.which("sacct") is None and shutil.which("squeue") is None:
        return ("Cannot ask SLURM about the jobs submitted before (no `sacct` on PATH): their state shows as "
                "UNKNOWN and a rerun submits them again (a run still running is waited for through its run "
                "folder's lock).")
    queue = next(iter(found.values())).queue
    if shutil.which("sacct") is None or (queue is not None and queue.accounting is False):
        why = f"sacct: {queue.sacct_note}" if queue is not None and queue.sacct_note else "no `sacct` on PATH"
        return (f"SLURM accounting is not available ({why}): the jobs' states come from `squeue`, which lists "
                "queued and running jobs only (none of them is submitted again); a job no longer queued shows as "
                "UNKNOWN, its end state not kept.")
    return None
