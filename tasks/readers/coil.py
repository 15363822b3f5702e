"""COIL-100: 100 objects on a turntable, 72 poses each.

Source: https://www.cs.columbia.edu/CAVE/software/softlib/coil-100.php (`coil-100.zip`, folder
`coil-100/` with `obj{1..100}__{angle}.png`). Labels: object N -> class N-1. The split is by pose
(TFDS angle bin = angle / 5); see `prepare.rule` in the catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "POSE_BINS", "read_coil100"]

ARCHIVE = "coil-100.zip"
POSE_BINS = {"train": {70, 71, 0, 1, 2}, "dev": set(range(16, 21)), "dev_test": set(range(50, 55))}  # the rest: test
_NAME = re.compile(r"coil-100/obj(\d+)__(\d+)\.png")


def read_coil100(src: SourceFolder) -> Iterator[Example]:
    for name, read in zip_members(src.path(ARCHIVE)):
        match = _NAME.fullmatch(name)  # the exact path: coil-100/objN__A.png
        if not match:
            continue
        obj, angle = int(match.group(1)), int(match.group(2))
        group = next((split for split, bins in POSE_BINS.items() if angle // 5 in bins), "test")
        yield Example(read(), obj - 1, group, name)
