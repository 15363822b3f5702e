"""The run folder: naming a new run, reopening one to resume it, holding it with an OS lock so two
processes never write one run, and refusing a stream whose prepared data is missing."""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig
from rich.console import Console

from nevisbench import layout
from nevisbench.errors import ConfigError, DataError, RunInterrupted
from nevisbench.run.store.report import print_warning
from nevisbench.run.store.results import ResultsStore
from nevisbench.tasks.cache import STATUS_READY, task_status
from nevisbench.tasks.catalog import Stream

__all__ = ["RunFolder", "check_prepared", "hold_folder", "EXACT_RUN_DIR_ENV"]

# set (by a sweep) for a run whose folder must be exactly <out_dir>/<run_name>: refused if it exists
EXACT_RUN_DIR_ENV = layout.EXACT_RUN_DIR_ENV
# what a committed results line needs for the stream to go on and be summarised
RESUMED_KEYS = ("task", "index", "domain", "status", "test_error", "flops", "wall_seconds")


def _new_folder(cfg: DictConfig) -> Path:
    out_dir = Path(os.path.expanduser(cfg.out_dir))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create out_dir '{cfg.out_dir}': {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"out_dir '{cfg.out_dir}' is not writable")
    base = cfg.run_name or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.choices.learner}"
    if os.environ.get(EXACT_RUN_DIR_ENV):  # a sweep job: its own folder or none, never a suffixed one
        try:
            (out_dir / base).mkdir()
        except FileExistsError:
            raise ConfigError(f"run folder {out_dir / base} already exists; a sweep job runs in its own folder only "
                              f"(continue it with resume={out_dir / base})") from None
        return out_dir / base
    name, suffix = base, 1
    while (out_dir / name).exists():
        suffix += 1
        name = f"{base}-{suffix}"
    (out_dir / name).mkdir()
    return out_dir / name


def hold_folder(path: Path, what: str) -> IO[str]:
    """Hold `path` with an exclusive OS lock on its `.lock` file (released when the process ends,
    even on SIGKILL), the file naming the holder; `what` names the folder in the error."""
    handle = open(path / layout.LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = (handle.read().strip().splitlines() or ["another process"])[-1]
        handle.close()
        raise ConfigError(f"{what} {path} is in use by {holder}; wait for it to finish "
                          "(or stop it) before resuming") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


@dataclass
class RunFolder:
    """One run's folder, held by this process until `release()`."""

    path: Path
    store: ResultsStore
    finished: list[dict[str, Any]] = field(default_factory=list)  # results lines already committed
    done: bool = False  # summary.json exists: nothing left to do
    summary_lost: str | None = None  # every task is committed, but summary.json is missing or unreadable (why)
    unverified: bool = False  # a reopened folder with no digest of its config to check (older than the digest)
    _lock: IO[str] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, cfg: DictConfig, config_yaml: str) -> RunFolder:
        path = _new_folder(cfg)
        folder = cls(path, ResultsStore(path))
        folder._acquire()
        try:
            folder.store.write_config(config_yaml)
        except BaseException as exc:
            folder.release()
            if isinstance(exc, KeyboardInterrupt) and (path / layout.CONFIG).is_file():  # held until the write was done
                raise RunInterrupted(path, 0) from None
            raise
        return folder

    @classmethod
    def reopen(cls, run_dir: Path, planned: list[str], *, follower: bool = False) -> RunFolder:
        """A run to resume: its committed lines must be the first tasks of the stream as it stands.
        A `follower` (a DDP rank other than 0) reads the folder rank 0 holds: no lock, no writes."""
        folder = cls(Path(run_dir), ResultsStore(Path(run_dir), writer=not follower))
        if not follower:
            folder._acquire()
        try:
            folder.store.remove_stale_temporaries()
            damaged = None
            folder.unverified = not folder.store.check_config()  # config.yaml, state and summary checked before anything
            lines = folder.store.read_results()
            if (folder.path / layout.SUMMARY).exists():
                try:
                    folder.store.check_summary(folder.store.read_summary(), lines)
                    folder.done = True
                    return folder
                except DataError as exc:  # not "finished": an error, unless every task is committed (below)
                    damaged = exc
            folder.finished = lines
            for number, line in enumerate(folder.finished, start=1):
                missing = [k for k in RESUMED_KEYS if k not in line]
                if missing:
                    raise DataError(f"{folder.store.results_path}: line {number} is not a task result (missing "
                                    f"{', '.join(missing)}); the run cannot be resumed from it")
            keys = [r["task"] for r in folder.finished]
            if keys != planned[: len(keys)]:
                raise ConfigError(f"the tasks finished in {run_dir} ({', '.join(keys)}) are not the first tasks of "
                                  f"the stream as it stands now ({', '.join(planned)}); did the prepared data change?")
            if keys and keys == planned:  # a finished run whose summary was lost: rebuilt from the lines
                folder.summary_lost = "unreadable" if damaged is not None else "missing"
            elif damaged is not None:
                raise damaged
        except BaseException:
            folder.release()
            raise
        return folder

    def _acquire(self) -> None:
        self._lock = hold_folder(self.path, "run folder")
        self.store.hold(self._lock)

    def release(self) -> None:
        """Let the folder go; the lock file is removed so a finished run holds only its results."""
        if self._lock is not None:
            (self.path / layout.LOCK).unlink(missing_ok=True)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def check_prepared(stream: Stream, cfg: DictConfig, console: Console) -> tuple[Stream, list[dict[str, str]]]:
    """Refuse a stream whose prepared data is missing or corrupt (before any training), unless
    `stream.allow_missing`: then drop those tasks, warn loudly, and return them to be recorded."""
    root = Path(os.path.expanduser(cfg.data.root))
    bad: dict[str, str] = {}
    for spec in stream.tasks:
        if spec.requires_data and spec.key not in bad:
            status = task_status(root, spec.key, verify=False)
            if status["status"] != STATUS_READY:
                bad[spec.key] = f"{status['status']}: {status['reason']}"
    if not bad:
        return stream, []
    keys = list(bad)
    command = f"nevisbench data prepare {' '.join(keys)} --root {cfg.data.root} --source-dir DIR (or --download)"
    listing = "; ".join(f"{k} ({v})" for k, v in bad.items())
    if not cfg.stream.allow_missing:
        raise DataError(f"{len(keys)} task(s) of stream '{stream.name}' are not prepared in {root}: {listing}. "
                        f"Prepare them with: {command} -- or run the others with stream.allow_missing=true")
    kept = tuple(t for t in stream.tasks if t.key not in bad)
    if not kept:
        raise DataError(f"no task of stream '{stream.name}' is prepared in {root}; prepare them with: {command}")
    print_warning(console, f"stream.allow_missing=true: SKIPPING {len(keys)} unprepared task(s): {listing}. "
                           f"This run covers {len(kept)} of {len(stream.tasks)} tasks; summary.json lists the skipped ones. "
                           f"To add them: {command}")
    return Stream(stream.name, stream.description, kept), [{"task": k, "reason": v} for k, v in bad.items()]
