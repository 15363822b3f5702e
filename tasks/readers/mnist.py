"""idx files: MNIST and Fashion-MNIST (same layout, same reader).

Sources: http://yann.lecun.com/exdb/mnist/ (mirror https://storage.googleapis.com/cvdf-datasets/mnist/)
and https://github.com/zalandoresearch/fashion-mnist. Four gzipped idx files; a user who already
gunzipped them may pass the plain files. Official train -> group 'train', t10k -> 'test'.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["FILES", "read_idx", "read_idx_file"]

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def read_idx_file(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) as an array of its declared shape."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:  # already gunzipped by the user
            data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable gzip file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path.name} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def read_idx(src: SourceFolder) -> Iterator[Example]:
    for group, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx_file(src.first(f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"))
        labels = read_idx_file(src.first(f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise DataError(f"{prefix} images ({len(images)}) and labels ({len(labels)}) differ in count")
        for i in range(len(labels)):
            yield Example(images[i], int(labels[i]), group, f"{prefix}[{i}]")
