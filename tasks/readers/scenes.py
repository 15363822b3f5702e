"""15 Scenes (Lazebnik et al. 2006).

Source: `scene_categories.zip` (the UIUC page, via web.archive.org): one folder of JPEGs per
category. Class ids follow the Nevis handler's fixed list `CLASSES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "CLASSES", "read_scenes15"]

ARCHIVE = "scene_categories.zip"
CLASSES = ("PARoffice", "kitchen", "MITinsidecity", "MITforest", "MITcoast", "MITstreet", "store", "industrial",
           "bedroom", "MITmountain", "MIThighway", "MITopencountry", "CALsuburb", "MITtallbuilding", "livingroom")


def read_scenes15(src: SourceFolder) -> Iterator[Example]:
    ids = {name: i for i, name in enumerate(CLASSES)}
    for name, read in zip_members(src.path(ARCHIVE)):
        parts = PurePosixPath(name).parts  # exactly <class>/<file>, every file but Thumbs.db (the handler's)
        if len(parts) == 2 and parts[0] in ids and parts[1] != "Thumbs.db":
            yield Example(read(), ids[parts[0]], "pool", name)
