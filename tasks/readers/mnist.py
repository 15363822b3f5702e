"""idx files: MNIST and Fashion-MNIST (same layout, same reader).

Sources: http://yann.lecun.com/exdb/mnist/ (mirror https://storage.googleapis.com/cvdf-datasets/mnist/)
and https://github.com/zalandoresearch/fashion-mnist. Four gzipped idx files; a user who already
gunzipped them may pass the plain files. Official train -> group 'train', t10k -> 'test'.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import MAX_MEMBER_BYTES, read_capped
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["FILES", "read_idx", "read_idx_file"]

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def read_idx_file(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) with `ndim` dimensions, as an array. The
    header is checked before the body is read, and no more than the body it declares is inflated."""
    opener = gzip.open if path.suffix == ".gz" else open  # plain: already gunzipped by the user
    try:
        with opener(path, "rb") as handle:
            header = handle.read(4)
            if len(header) < 4 or header[:3] != b"\x00\x00\x08":
                raise DataError(f"{path.name} is not an idx file of unsigned bytes")
            if header[3] != ndim:
                raise DataError(f"{path.name} declares {header[3]} dimensions, expected {ndim} "
                                f"({'images: count, rows, columns' if ndim == 3 else 'labels: count'})")
            dims = handle.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path.name} is truncated: its header ends early")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            size = math.prod(shape)
            if size > MAX_MEMBER_BYTES:
                raise DataError(f"{path.name} declares shape {shape} ({size} bytes), more than the "
                                f"{MAX_MEMBER_BYTES >> 20} MiB an idx file of SHORT needs; refusing to read it")
            body = read_capped(handle, size, path.name)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name} is not a readable gzip file ({exc})") from None
    if len(body) != size:
        raise DataError(f"{path.name} is truncated: {len(body)} bytes for shape {shape}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_idx(src: SourceFolder) -> Iterator[Example]:
    for group, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx_file(src.first(f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"), 3)
        labels = read_idx_file(src.first(f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"), 1)
        if len(images) != len(labels):
            raise DataError(f"{prefix} images ({len(images)}) and labels ({len(labels)}) differ in count")
        for i in range(len(labels)):
            yield Example(images[i], int(labels[i]), group, f"{prefix}[{i}]")
