"""FGVC-Aircraft 2013b at the family level: 70 families (held out, 2020).

Source: https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (`fgvc-aircraft-2013b.tar.gz`:
`data/images/<id>.jpg`, `data/families.txt`, `data/images_family_{trainval,test}.txt`). Class id:
the family's line in `families.txt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "TABLES", "read_fgvc"]

ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
TABLES = ("families.txt", "images_family_trainval.txt", "images_family_test.txt")


def read_fgvc(src: SourceFolder) -> Iterator[Example]:
    tables: dict[str, bytes] = {}
    images: list[tuple[str, bytes]] = []
    for name, read in tar_members(src.path(ARCHIVE)):
        base = PurePosixPath(name).name
        if base in TABLES:
            tables[base] = read()
        elif "/images/" in name and base.lower().endswith(".jpg"):
            images.append((name, read()))
    for table in TABLES:
        if table not in tables:
            raise DataError(f"{ARCHIVE} has no data/{table}")
    families = {f: i for i, f in enumerate(line.strip() for line in tables["families.txt"].decode().splitlines() if line.strip())}
    which = {}
    for group, table in (("pool", "images_family_trainval.txt"), ("test", "images_family_test.txt")):
        for line in tables[table].decode().splitlines():
            if line.strip():
                image_id, family = line.strip().split(" ", 1)
                which[image_id] = (group, families[family])
    for name, data in images:  # tar order
        image_id = PurePosixPath(name).stem
        if image_id in which:
            group, label = which[image_id]
            yield Example(data, label, group, name)
