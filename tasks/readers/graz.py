"""Graz-02 (INRIA annotations, `ig02`): bikes, cars, people.

Source: http://lear.inrialpes.fr/people/marszalek/data/ig02/ (`ig02-v1.0-{bikes,cars,people}.zip`,
images `<class>/<name>.image.png`, lists `<class>_train.txt`). In the Nevis handler's order: every
class's train-list images (zip by zip, sorted names), then every class's images again, exact
duplicates (pixels as decoded, label) dropped, the first kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

from nevisbench.tasks.archives import decode_image, zip_members
from nevisbench.tasks.readers.common import Dedup, Example, SourceFolder, text_lines

__all__ = ["CLASSES", "SUFFIX", "read_graz02"]

CLASSES = (("bikes", "ig02-v1.0-bikes.zip"), ("cars", "ig02-v1.0-cars.zip"), ("people", "ig02-v1.0-people.zip"))
SUFFIX = ".image.png"


def _images(src: SourceFolder, cls: str, archive: str) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    """The class's images `<class>/<name>.image.png` (sorted) and the names its train list holds."""
    members = list(zip_members(src.path(archive)))
    train_list = next((read for name, read in members if name == f"{cls}_train.txt"), None)
    listed = {line.split()[0] for line in text_lines(train_list())} if train_list else set()
    images = [(n, r) for n, r in members if n.endswith(SUFFIX) and PurePosixPath(n).parent.as_posix() == cls]
    return images, {f"{cls}/{name}{SUFFIX}" for name in listed}


def read_graz02(src: SourceFolder) -> Iterator[Example]:
    dedup = Dedup()
    classes = [(label, archive, *_images(src, cls, archive)) for label, (cls, archive) in enumerate(CLASSES)]
    train_part = [(label, archive, [(n, r) for n, r in images if n in listed]) for label, archive, images, listed in classes]
    rest = [(label, archive, images) for label, archive, images, _ in classes]
    for label, archive, images in train_part + rest:  # every train part, then every class's images
        for name, read in images:
            image = decode_image(read(), name)
            if dedup.keep(image, label):
                yield Example(image.convert("RGB"), label, "pool", f"{archive}/{name}")
