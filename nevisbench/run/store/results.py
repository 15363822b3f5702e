"""The results store: `<run dir>/config.yaml`, `results.jsonl` (one line per finished task),
`summary.json` and the resume state (their names: `nevisbench.layout`). Every write replaces
the file atomically (write a temporary file in the same folder, fsync, rename), so a crash at any
instant leaves the old file or the new one, never a torn one.

torch loads only inside the methods that save or read state: the sweep and the analysis import
this module to read and write results without it."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nevisbench import layout
from nevisbench.errors import DataError, WriteFailed
from nevisbench.run.store._faults import crash_point

__all__ = ["atomic_write_text", "atomic_write_bytes", "harness_write", "read_text", "sigint_deferred", "ResultsStore",
           "UnreadableText"]


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done (main thread only), so a write in flight completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)


@contextlib.contextmanager
def harness_write(path: Path, *, temporary: Path | None = None) -> Iterator[None]:
    """A write of the harness's own file `path`: an OSError (a full disk, a vanished folder) becomes
    one `WriteFailed` line naming the file, never a learner's failure, and `temporary` is removed."""
    try:
        yield
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                Path(temporary).unlink(missing_ok=True)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (exc.strerror or str(exc))
        raise WriteFailed(f"Cannot write {path}: {why} ({type(exc).__name__} {exc.errno}); the temporary file is "
                          "removed and what was committed before is intact" + ("; free some space and resume the run"
                                                                                if full else "")) from None


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file through `write(binary_handle)` atomically: temporary file in the same folder,
    fsync, rename, fsync of the folder. A Ctrl-C meanwhile waits until the file is in place."""
    path = Path(path)
    with sigint_deferred(), harness_write(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            crash_point(f"write:{path.name}")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


class UnreadableText(ValueError):
    """A file that is not UTF-8 text or cannot be read; the message names it and why, in one line."""


def read_text(path: Path) -> str:
    """`path`'s UTF-8 text; `UnreadableText` naming the file and why (the first byte that is not
    UTF-8, or the OS's reason) otherwise. The run and sweep folders' readers share it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableText(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UnreadableText(f"{path}: cannot be read ({' '.join((exc.strerror or str(exc)).split())})") from None


def _writes(method: Callable[..., None]) -> Callable[..., None]:
    """A ResultsStore write: a no-op on a store that only reads (`writer=False`)."""
    @functools.wraps(method)
    def write(self: ResultsStore, *args: Any, **kwargs: Any) -> None:
        if self.writer:
            self.check_held()
            method(self, *args, **kwargs)
    return write


class ResultsStore:
    """Reads and writes one run folder. A store with `writer=False` (a DDP process other than rank
    0) reads the folder and writes nothing: every write below is then a no-op."""

    CONFIG, RESULTS, SUMMARY = layout.CONFIG, layout.RESULTS, layout.SUMMARY
    REQUIRED = ("task",)  # a line without its task cannot be matched to the stream

    def __init__(self, run_dir: Path, *, writer: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.writer = writer
        self._held: Any = None  # the open lock file of the folder this run holds (`hold`)

    def hold(self, lock: Any) -> None:
        """This process holds the folder through `lock` (its open `.lock` file): later writes go to
        this folder or nowhere (`check_held`)."""
        self._held = lock

    def check_held(self) -> None:
        """Refuse to write into a run folder that was deleted (or replaced) while this run held it
        (its lock file, held open, is then unlinked or no longer the folder's): a write would recreate
        a folder of stray files (one results line, no config.yaml) that a sweep took for a finished job."""
        if self._held is None:
            return
        try:
            held = os.fstat(self._held.fileno())
            there = os.stat(self.run_dir / layout.LOCK)
            same = held.st_nlink > 0 and (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
        except (OSError, ValueError):  # ValueError: the handle was closed (the folder released)
            same = False
        if not same:
            raise WriteFailed(f"The run folder {self.run_dir} was deleted or replaced while this run held it; the run "
                              "stops and writes nothing more there. Start it again (a sweep runs the job again)")

    @property
    def results_path(self) -> Path:
        return self.run_dir / self.RESULTS

    @_writes
    def write_config(self, text: str) -> None:
        """config.yaml, then its digest (state/config.sha256): what resume checks the file against."""
        atomic_write_text(self.run_dir / self.CONFIG, text)
        atomic_write_text(self.state_dir / layout.CONFIG_DIGEST, self.config_digest() + "\n")

    def config_digest(self) -> str:
        """The sha256 of config.yaml as it is now."""
        try:
            return hashlib.sha256((self.run_dir / self.CONFIG).read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"Cannot resume: {self.run_dir / self.CONFIG} cannot be read ({exc.strerror})") from None

    def check_config(self) -> bool:
        """Refuse a config.yaml edited since the run started (its digest differs from the one written
        then); False when there is no digest to check against (a run folder older than the digest)."""
        path = self.run_dir / layout.STATE / layout.CONFIG_DIGEST
        try:
            started = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return False
        if started != self.config_digest():
            raise DataError(f"Cannot resume: {self.run_dir / self.CONFIG} was changed after the run started (its "
                            f"sha256 differs from {path}); a resumed run must go on as it began. Restore the file, "
                            "or start a new run with the new settings")
        return True

    def read_results(self) -> list[dict[str, Any]]:
        """Finished task lines; a torn or malformed line is reported, never silently dropped."""
        if not self.results_path.exists():
            return []
        text = self.results_path.read_text(encoding="utf-8")
        lines = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.results_path}: line {number} is torn or not JSON: {line[:60]!r}") from None
            missing = [k for k in self.REQUIRED if not isinstance(record, dict) or k not in record]
            if missing:
                raise DataError(f"{self.results_path}: line {number} is not a task result (missing "
                                f"{', '.join(missing)}): {line[:60]!r}")
            lines.append(record)
        if text and not text.endswith("\n"):
            raise DataError(f"{self.results_path}: the last line is incomplete (torn write)")
        return lines

    @_writes
    def append(self, result: dict[str, Any]) -> None:
        old = self.results_path.read_text(encoding="utf-8") if self.results_path.exists() else ""
        atomic_write_text(self.results_path, old + json.dumps(result, sort_keys=True) + "\n")

    @_writes
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.run_dir / self.SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    # -- resume state: learner state + stream FLOPs after each finished task, mid-task checkpoints
    @property
    def state_dir(self) -> Path:
        self.check_held()
        path = self.run_dir / layout.STATE
        path.mkdir(exist_ok=True)
        return path

    def task_checkpoint(self, index: int) -> Path:
        return layout.task_checkpoint(self.state_dir, index)

    @_writes
    def save_task_state(self, index: int, state: dict[str, Any]) -> None:
        import torch

        state = {**state, "config_sha256": self.config_digest()}  # checked when the run resumes from it
        atomic_write_bytes(layout.task_state(self.state_dir, index), lambda handle: torch.save(state, handle))

    def load_task_state(self, index: int) -> tuple[Path, dict[str, Any]]:
        """The state saved after task `index`, and its path (loaded with weights_only=True)."""
        import torch

        path = layout.task_state(self.state_dir, index)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"Cannot resume: the state after task {index} ({path}) is missing or unreadable: {reason}") from None
        if not isinstance(state, dict) or not {"learner", "scenario", "meter"} <= state.keys():
            raise DataError(f"Cannot resume: the state after task {index} ({path}) is not a nevisbench state file")
        if "config_sha256" in state and state["config_sha256"] != self.config_digest():  # older states have none
            raise DataError(f"Cannot resume: {self.run_dir / self.CONFIG} is not the config the state after task "
                            f"{index} ({path}) was saved with; restore it, or start a new run")
        return path, state

    def check_checkpoint(self, path: Path) -> None:
        """Refuse a mid-task checkpoint that cannot be read safely, naming it (before Lightning tries)."""
        import torch

        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"Cannot resume from the mid-task checkpoint {path}: {reason[:200]}. Delete it to "
                            "restart that task from its start") from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise DataError(f"Cannot resume from the mid-task checkpoint {path}: it is not a Lightning checkpoint. "
                            "Delete it to restart that task from its start")

    @_writes
    def prune_state(self, keep_index: int) -> None:
        """After task `keep_index` is committed, older state and its mid-task checkpoint go."""
        for index, path in layout.task_states(self.state_dir).items():
            if index < keep_index:
                path.unlink(missing_ok=True)
        self.task_checkpoint(keep_index).unlink(missing_ok=True)

    @_writes
    def clear_state(self) -> None:
        shutil.rmtree(self.run_dir / layout.STATE, ignore_errors=True)

    def read_summary(self) -> dict[str, Any]:
        path = self.run_dir / self.SUMMARY
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise DataError(f"{path} is damaged ({exc}); delete it and resume to write it again") from None
        if not isinstance(summary, dict) or "tasks" not in summary:
            raise DataError(f"{path} is not a run summary; delete it and resume to write it again")
        return summary

    def check_summary(self, summary: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        """Refuse a summary that is not the summary of the committed `lines`: a run is finished only
        when its summary lists exactly the tasks results.jsonl holds (one or more), with their statuses."""
        path = self.run_dir / self.SUMMARY
        tasks = summary.get("tasks")
        listed = [(t.get("task"), t.get("status")) for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else None
        committed = [(line.get("task"), line.get("status")) for line in lines]
        if not committed or listed != committed:
            what = f"{len(listed)} task(s)" if listed is not None else "no task list"
            raise DataError(f"{path} does not match {self.results_path} (it lists {what}, results.jsonl commits "
                            f"{len(committed)}); delete it and resume to write it again")

    @_writes
    def remove_stale_temporaries(self) -> None:
        """Temporary files a crash left behind (`.results.jsonl.<random>.tmp` and the like)."""
        for folder in (self.run_dir, self.run_dir / layout.STATE):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)
