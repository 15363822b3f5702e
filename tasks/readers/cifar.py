"""CIFAR-10 and CIFAR-100, from the python-pickle archives.

Source: https://www.cs.toronto.edu/~kriz/cifar.html (`cifar-10-python.tar.gz`,
`cifar-100-python.tar.gz`). Each batch is a pickled dict with `data` (N x 3072 uint8, channel
planes) and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100); keys may be bytes (Python 3 pickles).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["CIFAR10", "CIFAR100", "read_cifar10", "read_cifar100"]

# (archive, folder in the archive, label key, training batches, test batch)
CIFAR10 = ("cifar-10-python.tar.gz", "cifar-10-batches-py", "labels", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100 = ("cifar-100-python.tar.gz", "cifar-100-python", "fine_labels", ("train",), "test")


def _reader(archive: str, folder: str, label_key: str, train_members: tuple[str, ...], test_member: str) -> Callable[[SourceFolder], Iterator[Example]]:
    def read(src: SourceFolder) -> Iterator[Example]:
        batches = {}
        wanted = {f"{folder}/{m}": m for m in (*train_members, test_member)}
        for name, get in tar_members(src.path(archive)):
            if name in wanted:
                try:
                    batches[wanted[name]] = pickle.loads(get(), encoding="latin1")
                except Exception as exc:  # a corrupt pickle
                    raise DataError(f"{archive}: cannot read {name} ({exc})") from None
        for member in (*train_members, test_member):
            if member not in batches:
                raise DataError(f"{archive} has no {folder}/{member}")
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batches[member].items()}
            if "data" not in batch or label_key not in batch:
                raise DataError(f"{archive}: {folder}/{member} has no '{label_key}' or 'data' entry")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for i, label in enumerate(batch[label_key]):
                yield Example(data[i], int(label), "test" if member == test_member else "train", f"{member}[{i}]")

    return read


read_cifar10 = _reader(*CIFAR10)
read_cifar100 = _reader(*CIFAR100)
