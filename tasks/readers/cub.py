"""Caltech-UCSD Birds 200-2011 (held out, 2020).

Source: https://www.vision.caltech.edu/datasets/cub_200_2011/ (`CUB_200_2011.tgz`: `images/NNN.Name/*.jpg`,
`images.txt`, `train_test_split.txt` (1 = train), `image_class_labels.txt` (1-based)).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "TABLES", "read_cub"]

ARCHIVE = "CUB_200_2011.tgz"
TABLES = ("images.txt", "train_test_split.txt", "image_class_labels.txt")


def read_cub(src: SourceFolder) -> Iterator[Example]:
    tables, images = {}, {}
    for name, read in tar_members(src.path(ARCHIVE)):
        parts = PurePosixPath(name).parts
        if parts[-1] in TABLES and "attributes" not in parts:
            tables[parts[-1]] = dict(line.split(" ", 1) for line in read().decode().splitlines() if line.strip())
        elif "images" in parts[:-1] and name.lower().endswith(".jpg"):
            images["/".join(parts[parts.index("images") + 1:])] = read()
    for table in TABLES:
        if table not in tables:
            raise DataError(f"{ARCHIVE} has no {table}")
    for image_id, path in tables["images.txt"].items():
        path = path.strip()
        if path not in images:
            raise DataError(f"{ARCHIVE} has no images/{path}")
        group = "train" if tables["train_test_split.txt"][image_id].strip() == "1" else "test"
        yield Example(images.pop(path), int(tables["image_class_labels.txt"][image_id]) - 1, group, path)
