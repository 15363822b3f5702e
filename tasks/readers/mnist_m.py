"""MNIST-M: MNIST digits blended over BSDS500 photo patches (Ganin et al. 2015).

Source: `mnist_m.tar.gz` (Google Drive, as the Nevis handler): `mnist_m/mnist_m_{train,test}/*.png`
with `mnist_m/mnist_m_{train,test}_labels.txt` ("<file> <digit>" lines). Train and test are pooled
in tar order and exact duplicates dropped. Two streaming passes: the label files, then the images.
"""

from __future__ import annotations

from collections.abc import Iterator

from nevisbench.errors import DataError
from nevisbench.tasks.archives import decode_image, tar_members
from nevisbench.tasks.readers.common import Dedup, Example, SourceFolder, text_lines

__all__ = ["ARCHIVE", "read_mnist_m"]

ARCHIVE = "mnist_m.tar.gz"
_PARTS = ("train", "test")


def _labels(src: SourceFolder) -> dict[str, dict[str, int]]:
    files = {f"mnist_m/mnist_m_{part}_labels.txt": part for part in _PARTS}
    labels: dict[str, dict[str, int]] = {part: {} for part in _PARTS}
    for name, read in tar_members(src.path(ARCHIVE)):
        if name in files:
            for line in text_lines(read()):
                file, digit = line.split()
                labels[files[name]][file] = int(digit)
    return labels


def read_mnist_m(src: SourceFolder) -> Iterator[Example]:
    labels = _labels(src)
    folders = {f"mnist_m/mnist_m_{part}": part for part in _PARTS}
    dedup = Dedup()
    for name, read in tar_members(src.path(ARCHIVE)):  # tar order, train and test pooled
        folder, _, file = name.rpartition("/")
        if folder not in folders or not file.endswith(".png"):
            continue
        part = folders[folder]
        if file not in labels[part]:
            raise DataError(f"mnist_m: {name} has no line in mnist_m_{part}_labels.txt")
        image = decode_image(read(), name)
        if dedup.keep(image, labels[part][file]):
            yield Example(image.convert("RGB"), labels[part][file], "pool", name)
