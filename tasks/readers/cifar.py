"""CIFAR-10 and CIFAR-100, from the python-pickle archives.

Source: https://www.cs.toronto.edu/~kriz/cifar.html (`cifar-10-python.tar.gz`,
`cifar-100-python.tar.gz`). Each batch is a pickled dict with `data` (N x 3072 uint8, channel
planes) and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100); keys may be bytes (Python 3 pickles).

Pickles can run code when loaded, and `--no-verify` reads archives nobody vouched for, so batches
are loaded by `_BatchUnpickler`, which admits only the few globals a pickled numpy array needs and
refuses any other with a one-line DataError naming the member.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["CIFAR10", "CIFAR100", "read_cifar10", "read_cifar100"]

# (archive, folder in the archive, label key, training batches, test batch)
CIFAR10 = ("cifar-10-python.tar.gz", "cifar-10-batches-py", "labels", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100 = ("cifar-100-python.tar.gz", "cifar-100-python", "fine_labels", ("train",), "test")


CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_BYTES = 3 * 32 * 32  # one row of `data`: the red, green and blue 32x32 planes


class _Refused(Exception):
    """The pickle asked for something a CIFAR batch never uses."""


_NUMPY_RECONSTRUCT: Any = np.zeros(1, np.uint8).__reduce__()[0]  # numpy's `_reconstruct`
_NUMPY_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numpy's `_frombuffer` (pickle protocol 5)


def _empty_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's `_reconstruct` as pickles call it: an empty ndarray that BUILD then fills (numpy
    checks the data against the shape there). Any other call could allocate without bound."""
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise _Refused(f"numpy _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r})")
    return _NUMPY_RECONSTRUCT(subtype, shape, dtype)


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused("a numpy array of Python objects")
    return dtype


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a pickled uint8 numpy array refers to, under the names numpy 1 and numpy 2 write."""
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _plain_dtype,
                                           ("_codecs", "encode"): codecs.encode}  # protocol 2 pickles bytes so
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _empty_array
        allowed[(f"{package}.numeric", "_frombuffer")] = _NUMPY_FROMBUFFER
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes, numbers and numeric numpy arrays; nothing else."""

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def _load_batch(raw: bytes, archive: str, member: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 32, 32, 3), int64 labels (N,)) of one pickled batch, checked."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"{archive}: {member} is not a plain CIFAR batch: its pickle asks for {exc}, which could run code; "
                        f"refusing to load it. Re-download the archive from {CIFAR_PAGE}") from None
    except Exception as exc:  # a corrupt pickle raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise DataError(f"{archive}: cannot read {member} ({type(exc).__name__}: {exc}); "
                        f"re-download the archive from {CIFAR_PAGE}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{archive}: {member} holds a {type(batch).__name__}, not a CIFAR batch (a dict with "
                        f"'data' and '{label_key}'); re-download the archive from {CIFAR_PAGE}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{archive}: {member} has no '{label_key}' or 'data' entry")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != IMAGE_BYTES or data.dtype.kind not in "ui":
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{archive}: {member}: 'data' is {shape}, expected uint8 (N, {IMAGE_BYTES}); the archive is damaged")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DataError(f"{archive}: {member}: 'data' holds values outside 0..255; the archive is damaged")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError, OverflowError):
        labels = np.asarray(None)
    if labels.ndim != 1 or labels.dtype.kind not in "ui" or len(labels) != len(data):
        raise DataError(f"{archive}: {member}: '{label_key}' must be {len(data)} integer labels, one per image, got "
                        f"{labels.dtype} {labels.shape}; the archive is damaged")
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def _reader(
    archive: str, folder: str, label_key: str, train_members: tuple[str, ...], test_member: str
) -> Callable[[SourceFolder], Iterator[Example]]:
    def read(src: SourceFolder) -> Iterator[Example]:
        """Batch by batch as the tar stores them (one batch in memory); `order` is the official order."""
        members = (*train_members, test_member)
        wanted = {f"{folder}/{m}": m for m in members}
        seen = set()
        for name, get in tar_members(src.path(archive)):
            if name not in wanted or wanted[name] in seen:
                continue
            member = wanted[name]
            seen.add(member)
            images, labels = _load_batch(get(), archive, name, label_key)
            group, rank = ("test" if member == test_member else "train"), members.index(member)
            for i, label in enumerate(labels.tolist()):
                yield Example(images[i], label, group, f"{member}[{i}]", order=(rank, i))
        for member in members:
            if member not in seen:
                raise DataError(f"{archive} has no {folder}/{member}")

    return read


read_cifar10 = _reader(*CIFAR10)
read_cifar100 = _reader(*CIFAR100)
