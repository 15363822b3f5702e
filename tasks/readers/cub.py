"""Caltech-UCSD Birds 200-2011 (held out, 2020).

Source: https://www.vision.caltech.edu/datasets/cub_200_2011/ (`CUB_200_2011.tgz`:
`CUB_200_2011/images/NNN.Name/*.jpg`, `images.txt`, `train_test_split.txt` (1 = train),
`image_class_labels.txt` (1-based)). Read in two streaming passes: the tables, then the images in
stored order; `order` is their line in `images.txt`.
"""

from __future__ import annotations

from collections.abc import Iterator

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, text_lines

__all__ = ["ARCHIVE", "TOP", "TABLES", "read_cub"]

ARCHIVE = "CUB_200_2011.tgz"
TOP = "CUB_200_2011"
TABLES = ("images.txt", "train_test_split.txt", "image_class_labels.txt")


def _tables(src: SourceFolder) -> dict[str, dict[str, str]]:
    wanted = {f"{TOP}/{table}": table for table in TABLES}
    tables = {}
    for name, read in tar_members(src.path(ARCHIVE)):
        if name in wanted:
            tables[wanted[name]] = dict(line.split(None, 1) for line in text_lines(read()))
    for table in TABLES:
        if table not in tables:
            raise DataError(f"{ARCHIVE} has no {TOP}/{table}")
    return tables


def read_cub(src: SourceFolder) -> Iterator[Example]:
    tables = _tables(src)
    where = {}
    for rank, (image_id, path) in enumerate(tables["images.txt"].items()):
        group = "train" if tables["train_test_split.txt"][image_id].strip() == "1" else "test"
        where[f"{TOP}/images/{path.strip()}"] = (group, int(tables["image_class_labels.txt"][image_id]) - 1, rank)
    for name, read in tar_members(src.path(ARCHIVE)):
        if name in where:
            group, label, rank = where.pop(name)
            yield Example(read(), label, group, name[len(f"{TOP}/images/"):], order=rank)
    if where:
        raise DataError(f"{ARCHIVE} has no {sorted(where)[0]}")
