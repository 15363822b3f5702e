"""USPS handwritten digits, in LIBSVM's bz2 text format.

Source: https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps (`usps.bz2`,
`usps.t.bz2`). A line is `label index:value ...` with values in [-1, 1] and zeros omitted; labels
1..10 -> classes 0..9. `usps.bz2` is the pool split at random, `usps.t.bz2` the test split.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["FILES", "read_usps"]

FILES = {"pool": "usps.bz2", "test": "usps.t.bz2"}


MAX_LINE = 1 << 16  # characters; a USPS line (256 "index:value" pairs) has about 4500


def _libsvm_images(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    try:
        with bz2.open(path, "rt", encoding="ascii") as handle:
            while line := handle.readline(MAX_LINE):
                if len(line) == MAX_LINE and not line.endswith("\n"):
                    raise DataError(f"{path.name} has a line longer than {MAX_LINE} characters; it is not a USPS file")
                parts = line.split()
                if not parts:
                    continue
                values = np.zeros(256, dtype=np.float64)  # libsvm omits zeros
                for item in parts[1:]:
                    index, value = item.split(":")
                    values[int(index) - 1] = float(value)
                pixels = np.clip((values + 1) / 2 * 255, 0, 255).astype(np.uint8).reshape(16, 16)
                yield pixels, int(float(parts[0])) - 1
    except (OSError, EOFError, ValueError, IndexError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path.name} is not a readable bz2 libsvm file ({exc})") from None


def read_usps(src: SourceFolder) -> Iterator[Example]:
    for group, name in FILES.items():
        for i, (pixels, label) in enumerate(_libsvm_images(src.path(name))):
            yield Example(pixels, label, group, f"{name}:{i + 1}")
