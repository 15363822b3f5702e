"""Labeled Faces in the Wild: identities with at least 5 images.

Source: http://vis-www.cs.umass.edu/lfw/lfw.tgz (`lfw/<Person>/<Person>_NNNN.jpg`). Per identity,
in tar order: the last 2 images -> test, the 3rd-last -> dev_test, the 4th-last -> dev, the rest
-> train; identities are numbered in order of first appearance. Two streaming passes, as the
Nevis handler's: the names (to count each identity's images), then the images.
"""

from __future__ import annotations

from collections.abc import Iterator

from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "MIN_IMAGES", "read_lfw"]

ARCHIVE = "lfw.tgz"
MIN_IMAGES = 5


def _person(name: str) -> str | None:
    parts = name.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "lfw" else None  # every file of a person's folder, as the handler


def read_lfw(src: SourceFolder) -> Iterator[Example]:
    counts: dict[str, int] = {}
    for name, _ in tar_members(src.path(ARCHIVE)):
        person = _person(name)
        if person is not None:
            counts[person] = counts.get(person, 0) + 1
    labels = {p: i for i, p in enumerate(p for p, n in counts.items() if n >= MIN_IMAGES)}  # order of first appearance
    seen = dict.fromkeys(labels, 0)
    for name, read in tar_members(src.path(ARCHIVE)):
        person = _person(name)
        if person not in labels:
            continue
        i, n = seen[person], counts[person]
        seen[person] += 1
        group = "test" if i >= n - 2 else "dev_test" if i == n - 3 else "dev" if i == n - 4 else "train"
        yield Example(read(), labels[person], group, name)
