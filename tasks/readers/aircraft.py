"""FGVC-Aircraft 2013b at the family level: 70 families (held out, 2020).

Source: https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (`fgvc-aircraft-2013b.tar.gz`:
`fgvc-aircraft-2013b/data/images/<id>.jpg`, `data/families.txt`,
`data/images_family_{trainval,test}.txt`). Class id: the family's line in `families.txt`.

The archive (~2.7 GB) is read twice, as the Nevis handler reads it: once for the tables, once
streaming the images in stored order (one member in memory at a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, text_lines

__all__ = ["ARCHIVE", "DATA", "TABLES", "read_fgvc"]

ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
DATA = "fgvc-aircraft-2013b/data"
TABLES = ("families.txt", "images_family_trainval.txt", "images_family_test.txt")
_IMAGE = re.compile(re.escape(DATA) + r"/images/(\d+)\.[^./]+")  # the handler reads the id, whatever the extension


def _tables(src: SourceFolder) -> dict[str, list[str]]:
    wanted = {f"{DATA}/{table}": table for table in TABLES}
    tables = {wanted[name]: text_lines(read()) for name, read in tar_members(src.path(ARCHIVE)) if name in wanted}
    for table in TABLES:
        if table not in tables:
            raise DataError(f"{ARCHIVE} has no {DATA}/{table}")
    return tables


def read_fgvc(src: SourceFolder) -> Iterator[Example]:
    tables = _tables(src)
    families = {family: i for i, family in enumerate(tables["families.txt"])}
    which = {}
    for group, table in (("pool", "images_family_trainval.txt"), ("test", "images_family_test.txt")):
        for line in tables[table]:
            image_id, family = line.split(" ", 1)
            which[image_id] = (group, families[family.strip()])  # a family not listed: KeyError, reported as damaged
    for name, read in tar_members(src.path(ARCHIVE)):  # stored order, as the handler's
        match = _IMAGE.fullmatch(name)
        if match and match.group(1) in which:
            group, label = which[match.group(1)]
            yield Example(read(), label, group, name)
