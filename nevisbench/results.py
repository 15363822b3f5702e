"""The results store: `<run dir>/config.yaml`, `results.jsonl` (one line per finished task) and
`summary.json`. Every write replaces the file atomically (write a temporary file in the same
folder, fsync, rename), so a crash at any instant leaves the old file or the new one, never a
torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nevisbench.errors import DataError

__all__ = ["atomic_write_text", "ResultsStore"]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ResultsStore:
    """Reads and writes one run folder."""

    CONFIG = "config.yaml"
    RESULTS = "results.jsonl"
    SUMMARY = "summary.json"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def results_path(self) -> Path:
        return self.run_dir / self.RESULTS

    def write_config(self, text: str) -> None:
        atomic_write_text(self.run_dir / self.CONFIG, text)

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
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{self.results_path}: line {number} is torn or not JSON: {line[:60]!r}") from None
        if text and not text.endswith("\n"):
            raise DataError(f"{self.results_path}: the last line is incomplete (torn write)")
        return lines

    def append(self, result: dict[str, Any]) -> None:
        old = self.results_path.read_text(encoding="utf-8") if self.results_path.exists() else ""
        atomic_write_text(self.results_path, old + json.dumps(result, sort_keys=True) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.run_dir / self.SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads((self.run_dir / self.SUMMARY).read_text(encoding="utf-8"))
