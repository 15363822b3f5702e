"""Graz-02 (INRIA annotations, `ig02`): bikes, cars, people.

Source: http://lear.inrialpes.fr/people/marszalek/data/ig02/ (`ig02-v1.0-{bikes,cars,people}.zip`,
images `*.image.png`, lists `<class>_train.txt`). As the Nevis handler: the train-list images
first, then every image, exact duplicates dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np

from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Dedup, Example, SourceFolder, decoded

__all__ = ["CLASSES", "read_graz02"]

CLASSES = (("bikes", "ig02-v1.0-bikes.zip"), ("cars", "ig02-v1.0-cars.zip"), ("people", "ig02-v1.0-people.zip"))


def read_graz02(src: SourceFolder) -> Iterator[Example]:
    dedup = Dedup()
    for label, (cls, archive) in enumerate(CLASSES):
        members = dict(zip_members(src.path(archive)))
        train_list = next((r for n, r in members.items() if PurePosixPath(n).name == f"{cls}_train.txt"), None)
        listed = set(train_list().decode().split()) if train_list else set()
        images = sorted(n for n in members if n.endswith(".image.png"))
        first = [n for n in images if PurePosixPath(n).name[: -len(".image.png")] in listed]
        for name in first + images:  # train-list images first, then every image; duplicates dropped
            image = decoded(members[name](), name, "RGB")
            if dedup.keep(np.asarray(image), label):
                yield Example(image, label, "pool", f"{archive}/{name}")
