"""The sweep folder and its jobs.

```
<sweep_dir>/sweep.yaml      the command, the grid, the launcher settings
<sweep_dir>/jobs.jsonl      one line per job: overrides, run folder, state, attempts (replaced atomically)
<sweep_dir>/runs/<job>/     each job's run folder (config.yaml, results.jsonl, summary.json)
<sweep_dir>/logs/<job>.log  each job's output, every attempt appended
```
A job is one `python -m nevisbench run ...` subprocess, so a crash never takes the sweep down. What
a job has to do next is read from its run folder, the source of truth: `summary.json` means done
(never run again); a `config.yaml` without it means interrupted (continue with `resume=`); a folder
held by a live process (its OS lock) is still running somewhere and is waited for, not started twice;
a folder holding only its lock file and temporary files was killed before its config was written,
and starts afresh in the same folder. A job's run always goes to exactly `runs/<job name>`: the run
is told so (`EXACT_RUN_DIR_ENV`) and refuses a taken folder instead of suffixing its name.

One sweep process at a time runs a sweep folder: it holds the folder's OS lock (`hold`, the run
folder's mechanism); a second one stops with one line naming the holder. The records are read as
untrusted input (`records.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nevisbench import layout
from nevisbench.config.keys import override_literal
from nevisbench.errors import ConfigError, DataError
from nevisbench.run.store.results import ResultsStore, atomic_write_text
from nevisbench.run.store.run_folder import EXACT_RUN_DIR_ENV, hold_folder
from nevisbench.sweep.records import STATES, read_info, read_jobs

__all__ = ["STATES", "Job", "SweepFolder", "finished_run", "job_command", "run_job", "run_in_use", "stop_process", "last_output"]


@dataclass
class Job:
    """One run of the grid and what happened to it."""

    index: int
    name: str
    overrides: list[str]  # the run's overrides (without run_name / out_dir, which the sweep sets)
    state: str = "pending"
    attempts: int = 0  # launches so far (a resumed run counts one more)
    command: list[str] = field(default_factory=list)  # the last launch's `nevisbench run` arguments
    returncode: int | None = None
    error: str | None = None  # the last line the failed run printed
    job_id: str | None = None  # the engine's id (submitit), when it has one
    devices: int = 1  # processes the run trains on (trainer.devices; DDP when > 1): slots it takes at once
    accelerator: str = "auto"  # trainer.accelerator: cpu jobs need no GPUs on a SLURM node
    started: float | None = None
    finished: float | None = None


class SweepFolder:
    """Reads and writes one sweep folder; `jobs.jsonl` is rewritten atomically on every change."""

    SWEEP, JOBS = layout.SWEEP, layout.JOBS

    def __init__(self, path: Path, info: dict[str, Any], jobs: list[Job], recreated: list[int] | None = None) -> None:
        self.path = Path(path)
        self.info = info
        self.jobs = jobs
        self.recreated = recreated or []  # jobs of the grid jobs.jsonl lacked, recreated pending (records.py)
        self._lock = threading.Lock()
        self._held: Any = None  # the sweep folder's OS lock, while this process runs the sweep

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def runs_dir(self) -> Path:
        return self.path / layout.SWEEP_RUNS

    def run_dir(self, job: Job) -> Path:
        return self.runs_dir / job.name  # a checked name (records.py): never a path out of the folder

    def log_path(self, job: Job) -> Path:
        return self.path / layout.SWEEP_LOGS / f"{job.name}.log"

    @classmethod
    def hold(cls, path: Path) -> Any:
        """This process runs the sweep in `path`: its OS lock, or one line naming the process that holds it."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create sweep_dir '{path}': {exc.strerror}") from None
        return hold_folder(path, "sweep folder")

    @classmethod
    def create(cls, path: Path, info: dict[str, Any], jobs: list[Job], held: Any = None) -> SweepFolder:
        path = Path(path)
        held = held or cls.hold(path)
        try:
            (path / layout.SWEEP_LOGS).mkdir(exist_ok=True)
            (path / layout.SWEEP_RUNS).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create sweep_dir '{path}': {exc.strerror}") from None
        folder = cls(path, info, jobs)
        folder._held = held
        atomic_write_text(path / cls.SWEEP, yaml.safe_dump(info, sort_keys=False))
        folder.save()
        return folder

    @classmethod
    def open(cls, path: Path) -> SweepFolder:
        """Read a sweep folder (creating nothing): its records checked field by field and against its grid."""
        path = Path(path)
        if not (path / cls.SWEEP).is_file() or not (path / cls.JOBS).is_file():
            raise ConfigError(f"'{path}' is not a sweep folder (it needs {cls.SWEEP} and {cls.JOBS})")
        info = read_info(path / cls.SWEEP)
        group = info.get("group") or override_literal(path.resolve().name)
        records, missing = read_jobs(path / cls.JOBS, info, group)
        return cls(path, info, [Job(**record) for record in records], missing)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Threads of this process and job processes on other nodes (SLURM) update jobs.jsonl in
        turn: a thread lock plus an OS lock on `.jobs.lock`, held for each read-modify-write."""
        with self._lock, open(self.path / ".jobs.lock", "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self) -> None:
        text = "".join(json.dumps(asdict(job), sort_keys=True) + "\n" for job in self.jobs)
        atomic_write_text(self.path / self.JOBS, text)

    def save(self) -> None:
        with self._locked():
            self._write()

    def update_many(self, changes: dict[int, dict[str, Any]]) -> None:
        """Change several jobs (job index -> field changes) in one rewrite of jobs.jsonl."""
        with self._locked():
            on_disk = {j.index: j for j in SweepFolder.open(self.path).jobs}
            for job in self.jobs:
                if job.index in on_disk:
                    job.__dict__.update(on_disk[job.index].__dict__)
                for key, value in changes.get(job.index, {}).items():
                    setattr(job, key, value)
            self._write()

    def reload(self) -> None:
        """Take the job states from disk (other processes write them too)."""
        with self._locked():
            fresh = {j.index: j for j in SweepFolder.open(self.path).jobs}
        for job in self.jobs:
            if job.index in fresh:
                job.__dict__.update(fresh[job.index].__dict__)

    def update(self, job: Job, **changes: Any) -> None:
        """Change one job: on disk first (re-read under the lock, so no other job's news is lost)."""
        with self._locked():
            on_disk = {j.index: j for j in SweepFolder.open(self.path).jobs}
            if job.index in on_disk:  # another process (the job itself, on a node) may have moved it on
                job.__dict__.update(on_disk[job.index].__dict__)
            for key, value in changes.items():
                setattr(job, key, value)
            on_disk[job.index] = job
            for i, other in enumerate(self.jobs):
                if other.index in on_disk and other is not job:
                    self.jobs[i].__dict__.update(on_disk[other.index].__dict__)
            self._write()

    def settle(self) -> None:
        """Align each job's state with its run folder (after a sweep was killed, say)."""
        with self._locked():
            self.jobs = SweepFolder.open(self.path).jobs
            for job in self.jobs:
                if finished_run(self.run_dir(job)):
                    job.state = "done"
                elif job.state == "done":  # the run folder was deleted: run it again
                    job.state = "pending"
            self._write()

    def counts(self) -> dict[str, int]:
        return {state: sum(j.state == state for j in self.jobs) for state in STATES}


def run_in_use(run_dir: Path) -> bool:
    """Whether a live process holds the run folder's OS lock (see nevisbench/run/store/run_folder.py)."""
    lock = run_dir / layout.LOCK
    if not lock.is_file():
        return False
    with open(lock, encoding="utf-8") as handle:  # read only: opening creates nothing
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def finished_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished run: its config.yaml, and a summary.json that is the summary
    of its committed results lines (a folder deleted while its run ran, then recreated by the run's
    later writes, held a summary of one task and no config.yaml: never a finished job)."""
    if not (layout.is_run(run_dir) and (run_dir / layout.CONFIG).is_file()):
        return False
    store = ResultsStore(run_dir, writer=False)
    try:
        store.check_summary(store.read_summary(), store.read_results())
    except DataError:
        return False
    return True


def _stray(run_dir: Path) -> bool:
    """A run folder with files in it but no config.yaml, that no run was killed before writing."""
    return run_dir.is_dir() and not (run_dir / layout.CONFIG).is_file() and not _killed_before_config(run_dir)


def _killed_before_config(run_dir: Path) -> bool:
    """A run folder holding nothing but its lock file and temporary files (`.config.yaml.<x>.tmp`):
    its run was killed before its config was written (the caller has checked nobody holds it)."""
    return run_dir.is_dir() and all(p.name == layout.LOCK or (p.name.startswith(".") and p.name.endswith(".tmp"))
                                    for p in run_dir.iterdir())


def _literal(value: str) -> str:
    return override_literal(value)


def job_command(folder: SweepFolder, job: Job) -> list[str]:
    """`nevisbench run` arguments for the job's next launch: a fresh run, or `resume=` of its folder."""
    run_dir = folder.run_dir(job)
    if (run_dir / layout.CONFIG).is_file():
        return ["run", f"resume={run_dir}"]  # the run command takes the folder as it is (no quoting)
    if _killed_before_config(run_dir):  # start afresh, in this same folder
        for leftover in run_dir.iterdir():
            leftover.unlink()
        run_dir.rmdir()
    return ["run", *job.overrides, f"run_name={_literal(job.name)}", f"out_dir={_literal(str(folder.runs_dir))}"]


def _last_line(log: Path) -> str:
    """The run's error line, else its last printed line (never the sweep's own `=== attempt` header)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 8192))
            text = handle.read().decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("=== attempt")]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith(("error:", "Traceback", "interrupted"))]
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


def last_output(folder: SweepFolder, job: Job) -> str:
    return _last_line(folder.log_path(job))


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """Ctrl-C to a job's run (it keeps what it committed), then SIGKILL after `grace_s`. Polls, so
    it is safe inside a signal handler that interrupted `run_job`'s own polling."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()


def run_job(folder: SweepFolder, job: Job, *, env: dict[str, str] | None = None, poll_s: float = 2.0,
            on_process: Any = None, requeued: Any = None) -> str:
    """Run one job to its end in a subprocess (a resumed run when its folder says so); return its
    final state. A run folder in use by another process is waited for, never started twice.
    `on_process(popen)` sees the subprocess; `requeued()` true means the engine stopped the job to
    requeue it (preemption): it goes back to pending, not failed."""
    run_dir = folder.run_dir(job)
    while run_in_use(run_dir):
        time.sleep(poll_s)
    if finished_run(run_dir):
        folder.update(job, state="done", finished=time.time())
        return "done"
    if _stray(run_dir):
        folder.update(job, state="failed", finished=time.time(),
                      error=f"{run_dir} holds files but no {layout.CONFIG} (its folder was deleted while the run ran?); "
                            "move it away to run the job again")
        return "failed"
    command = job_command(folder, job)
    folder.update(job, state="running", attempts=job.attempts + 1, command=command, started=time.time(),
                  finished=None, returncode=None, error=None)
    log = folder.log_path(job)
    log.parent.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== attempt {job.attempts}: nevisbench {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen([sys.executable, "-m", "nevisbench", *command], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL,
                                   env={**os.environ, "COLUMNS": "120", EXACT_RUN_DIR_ENV: "1", **(env or {})})
        if on_process is not None:
            on_process(process)
        while process.poll() is None:  # polling, not wait(): a signal handler may stop it meanwhile
            time.sleep(0.25)
        returncode = process.returncode
    done = returncode == 0 and finished_run(run_dir)
    if not done and requeued is not None and requeued():
        folder.update(job, state="pending", returncode=returncode, error="preempted: requeued to resume")
        return "pending"
    state = "done" if done else "failed"
    folder.update(job, state=state, returncode=returncode, finished=time.time(),
                  error=None if done else _failure(log, returncode))
    return state


def _failure(log: Path, returncode: int) -> str:
    """A failed run's error text: killed by a signal (a cancelled job), else its error line."""
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return f"the run was killed by {name} (cancelled or out of memory?); a rerun resumes it"
    return _last_line(log) or f"exit status {returncode}"
