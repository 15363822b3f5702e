"""MNIST-M: MNIST digits blended over BSDS500 photo patches (Ganin et al. 2015).

Source: `mnist_m.tar.gz` (Google Drive, as the Nevis handler): `mnist_m/mnist_m_{train,test}/*.png`
with `mnist_m_{train,test}_labels.txt` ("<file> <digit>" lines). Train and test are pooled in tar
order and exact duplicates dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Dedup, Example, SourceFolder, decoded

__all__ = ["ARCHIVE", "read_mnist_m"]

ARCHIVE = "mnist_m.tar.gz"


def read_mnist_m(src: SourceFolder) -> Iterator[Example]:
    labels: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    images: list[tuple[str, str, bytes]] = []
    for name, read in tar_members(src.path(ARCHIVE)):
        base = PurePosixPath(name).name
        for part in ("train", "test"):
            if base == f"mnist_m_{part}_labels.txt":
                for line in read().decode().splitlines():
                    if line.strip():
                        file, digit = line.split()
                        labels[part][file] = int(digit)
            elif f"mnist_m_{part}/" in name and base.lower().endswith(".png"):
                images.append((part, name, read()))
    dedup = Dedup()
    for part, name, data in images:  # tar order, train and test pooled
        base = PurePosixPath(name).name
        if base not in labels[part]:
            raise DataError(f"mnist_m: {name} has no line in mnist_m_{part}_labels.txt")
        image = decoded(data, name, "RGB")
        if dedup.keep(np.asarray(image), labels[part][base]):
            yield Example(image, labels[part][base], "pool", name)
