"""Labeled Faces in the Wild: identities with at least 5 images.

Source: http://vis-www.cs.umass.edu/lfw/lfw.tgz (`lfw/<Person>/<Person>_NNNN.jpg`). Per identity,
in tar order: the last 2 images -> test, the 3rd-last -> dev_test, the 4th-last -> dev, the rest
-> train; identities are numbered in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "MIN_IMAGES", "read_lfw"]

ARCHIVE = "lfw.tgz"
MIN_IMAGES = 5


def read_lfw(src: SourceFolder) -> Iterator[Example]:
    people: dict[str, list[tuple[str, bytes]]] = {}
    for name, read in tar_members(src.path(ARCHIVE)):
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and name.lower().endswith(".jpg"):
            people.setdefault(parts[-2], []).append((name, read()))
    label = 0
    for files in people.values():  # order of first appearance in the tar
        if len(files) < MIN_IMAGES:
            continue
        n = len(files)
        for i, (name, data) in enumerate(files):
            group = "test" if i >= n - 2 else "dev_test" if i == n - 3 else "dev" if i == n - 4 else "train"
            yield Example(data, label, group, name)
        label += 1
