"""What every reader shares: the example record, the folder of source files, de-duplication, and
the reading of publishers' text files and member paths.

Members are matched by their exact path in the archive (as the Nevis handlers name them), never by
a suffix or a substring: OS metadata beside them (`__MACOSX/`, `._name` AppleDouble stubs) is
skipped by `tar_members` / `zip_members` themselves and by `SourceFolder.glob` (`is_os_metadata`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import decode_image, is_os_metadata

__all__ = ["Example", "SourceFolder", "Dedup", "decoded", "loadmat", "mat_strings", "text_lines", "is_os_metadata"]


@dataclass
class Example:
    image: Any  # encoded bytes | PIL image | uint8 ndarray (H, W) or (H, W, C)
    label: Any  # class id, or a tuple of class ids for multi-label tasks
    group: str  # where the example came from (official split, pool); the split rule reads it
    name: str  # member name, for error messages
    # where the Nevis pipeline visits this example (any sortable key), when a reader streams an
    # archive in stored order but Nevis visits it in another (a list's order, class by class):
    # the split rule sees the examples sorted by it. None: the reading order is Nevis's.
    order: Any = None


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
        return sorted(p for p in self.folder.iterdir() if p.is_file() and fnmatch(p.name, pattern) and not is_os_metadata(p.name))


class Dedup:
    """Drops exact duplicates, keeping the first, as Nevis' `deduplicate_data_generator` does: the
    key is the md5 of the image's pixel bytes as decoded (PIL's `tobytes()` in the file's own mode;
    no shape, as Nevis's) and the label."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, Any, str]] = set()
        self.dropped = 0

    def keep(self, pixels: Any, label: Any, scope: str = "") -> bool:
        data = pixels.tobytes() if hasattr(pixels, "tobytes") else bytes(pixels)
        key = (scope, label, hashlib.md5(data).hexdigest())
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def text_lines(data: bytes | str) -> list[str]:
    """The non-blank lines of a publisher's text file, stripped: a UTF-8 byte-order mark, CRLF or
    CR line ends and trailing whitespace read as the plain file does (as the Nevis handlers, which
    strip each line, read them)."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.removeprefix("\ufeff")
    return [line.strip() for line in text.splitlines() if line.strip()]


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
