"""What every reader shares: the example record, the folder of source files, de-duplication."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import decode_image

__all__ = ["Example", "SourceFolder", "Dedup", "decoded", "loadmat", "mat_strings"]


@dataclass
class Example:
    image: Any  # encoded bytes | PIL image | uint8 ndarray (H, W) or (H, W, C)
    label: Any  # class id, or a tuple of class ids for multi-label tasks
    group: str  # where the example came from (official split, pool); the split rule reads it
    name: str  # member name, for error messages


class SourceFolder:
    """The downloaded files of one dataset: its folder, plus files located elsewhere (a file
    shared by two tasks is found in the other task's folder)."""

    def __init__(self, folder: Path, key: str, located: dict[str, list[Path]] | None = None) -> None:
        self.folder, self.key = Path(folder), key
        self.located = located or {}  # file name or pattern -> paths, possibly in other folders
        self.opened: Path | None = None  # the file a reader asked for last: named when reading fails

    def path(self, name: str) -> Path:
        if name in self.located:
            self.opened = self.located[name][0]
            return self.opened
        path = self.folder / name
        if not path.is_file():
            raise DataError(f"{self.key}: {name} is missing from {self.folder}")
        self.opened = path
        return path

    def first(self, *names: str) -> Path:
        for name in names:
            if (self.folder / name).is_file():
                self.opened = self.folder / name
                return self.opened
        raise DataError(f"{self.key}: none of {', '.join(names)} is in {self.folder}")

    def glob(self, pattern: str) -> list[Path]:
        if pattern in self.located:
            return list(self.located[pattern])
        return sorted(p for p in self.folder.iterdir() if p.is_file() and fnmatch(p.name, pattern))


class Dedup:
    """Drops exact duplicates (decoded pixels + label), keeping the first, as Nevis'
    `deduplicate_data_generator` does."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, Any, str]] = set()
        self.dropped = 0

    def keep(self, pixels: np.ndarray, label: Any, scope: str = "") -> bool:
        key = (scope, label, hashlib.md5(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest())
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def decoded(data: bytes, name: str, mode: str) -> Any:
    """Encoded image bytes -> a PIL image in `mode` ('L' or 'RGB')."""
    return decode_image(data, name).convert(mode)


def loadmat(data: bytes, name: str) -> dict[str, Any]:
    """A MATLAB file's variables; a broken file is a DataError naming it."""
    from scipy.io import loadmat as scipy_loadmat

    try:
        return scipy_loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises several types for broken files
        raise DataError(f"cannot read {name} as a MATLAB file ({exc})") from None


def mat_strings(array: Any) -> list[str]:
    """A MATLAB cell array of strings -> Python strings."""
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(array).ravel()]
