"""Caltech datasets: cars and motorbikes (2001), Caltech-101, Caltech-256, and Office-Caltech 10
(Office-31's images plus Caltech-256's ten shared classes).

Sources: https://data.caltech.edu (`Cars_1999.zip`, `Cars_2001.zip`, `motorbikes_side.zip`, each
holding a tar of JPEGs; `caltech-101.zip` holding `caltech-101/101_ObjectCategories.tar.gz`;
`256_ObjectCategories.tar`) and Office-31's `domain_adaptation_images.tar.gz`
(https://faculty.cc.gatech.edu/~judy/domainadapt/). Members are matched by the exact paths the
Nevis handlers name; a tar inside a zip is streamed from it, never held whole.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members, zip_stream
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["CATEGORIES", "CALTECH101_FILES", "CALTECH101_INNER", "CALTECH256_FILE", "OFFICE_FILE", "OFFICE_CALTECH",
           "read_caltech_categories", "read_caltech101", "read_caltech256", "read_office_caltech"]

# (category, zip, the tar inside it, class id), categories in sorted order (the handler's)
CATEGORIES = (("cars_1999", "Cars_1999.zip", "Cars_1999/cars_markus.tar", 0),
              ("cars_2001", "Cars_2001.zip", "Cars_2001/cars_brad.tar", 0),
              ("motorcycles_2001", "motorbikes_side.zip", "motorbikes_side/motorbikes_side.tar", 1))
CALTECH101_FILES = ("caltech-101.zip", "101_ObjectCategories.tar.gz")  # the zip, or the tar it holds
CALTECH101_INNER = "caltech-101/101_ObjectCategories.tar.gz"
CALTECH256_FILE = "256_ObjectCategories.tar"
OFFICE_FILE = "domain_adaptation_images.tar.gz"
# Office-31 folder -> Caltech-256 folder (without its number), in class-id order
OFFICE_CALTECH = (("back_pack", "backpack"), ("bike", "touring-bike"), ("calculator", "calculator"),
                  ("headphones", "head-phones"), ("keyboard", "computer-keyboard"), ("laptop_computer", "laptop-101"),
                  ("monitor", "computer-monitor"), ("mouse", "computer-mouse"), ("mug", "coffee-mug"),
                  ("projector", "video-projector"))
_CALTECH256_PATH = re.compile(r"256_ObjectCategories/(\d{3})\.([^/]+)/\d{3}_\d{4}\.jpg")
_OFFICE_PATH = re.compile(r"\w+/images/([^/]+)/frame_\d{4}\.jpg")
_CALTECH101_PATH = re.compile(r"101_ObjectCategories/([^/]+)/([^/]+\.jpg)")


def read_caltech_categories(src: SourceFolder) -> Iterator[Example]:
    for _category, archive, inner, label in CATEGORIES:
        with zip_stream(src.path(archive), inner) as handle:
            for name, read in tar_members(handle, f"{archive}/{inner}"):
                if name == "README" or PurePosixPath(name).name == "README" or name.endswith(".mat"):
                    continue  # the handler's ignored files; every other member is an image
                yield Example(read(), label, "pool", f"{archive}/{inner}/{name}")


def _caltech101_members(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """The members of the Caltech-101 tar, streamed from inside the zip (or from the tar itself)."""
    if path.suffix != ".zip":
        yield from tar_members(path)
        return
    with zip_stream(path, CALTECH101_INNER) as handle:
        yield from tar_members(handle, f"{path.name}/{CALTECH101_INNER}")


def read_caltech101(src: SourceFolder) -> Iterator[Example]:
    """Two streaming passes: the file names first (TFDS's 30 training images per class are drawn
    from each class's sorted names), then the images in stored order; `order` is sorted order."""
    path = src.first(*CALTECH101_FILES)
    by_class: dict[str, list[str]] = defaultdict(list)
    for name, _ in _caltech101_members(path):
        match = _CALTECH101_PATH.fullmatch(name)
        if match:
            by_class[match.group(1)].append(match.group(2))
    labels = {c: i for i, c in enumerate(sorted(c.lower() for c in by_class))}
    rng = np.random.RandomState(1234)  # TFDS: 30 random training images per class, seed 1234
    train: set[tuple[str, str]] = set()
    for folder in sorted(by_class):
        files = sorted(by_class[folder])
        if len(files) < 30:
            raise DataError(f"caltech101: class folder {folder} has {len(files)} images; the TFDS split needs >= 30")
        train.update((folder, file) for file in rng.choice(files, 30, replace=False).tolist())
    for name, read in _caltech101_members(path):
        match = _CALTECH101_PATH.fullmatch(name)
        if match:
            folder, file = match.groups()
            group = "train" if (folder, file) in train else "test"
            yield Example(read(), labels[folder.lower()], group, f"{folder}/{file}", order=(folder, file))


def _caltech256(path: Path, keep: Callable[[str], Any] | None = None) -> Iterator[tuple[str, bytes, int, str]]:
    """(member, bytes, class id from the folder's number, class name) in stored order."""
    for name, read in tar_members(path):
        match = _CALTECH256_PATH.fullmatch(name)
        if match and (keep is None or keep(match.group(2))):
            yield name, read(), int(match.group(1)) - 1, match.group(2)


def read_caltech256(src: SourceFolder) -> Iterator[Example]:
    for name, data, label, _ in _caltech256(src.path(CALTECH256_FILE)):
        yield Example(data, label, "pool", name)


def read_office_caltech(src: SourceFolder) -> Iterator[Example]:
    office = {o: i for i, (o, _) in enumerate(OFFICE_CALTECH)}
    caltech = {c: i for i, (_, c) in enumerate(OFFICE_CALTECH)}
    for name, read in tar_members(src.path(OFFICE_FILE)):
        match = _OFFICE_PATH.fullmatch(name)
        if match and match.group(1) in office:
            yield Example(read(), office[match.group(1)], "office", name)
    for name, data, _, folder in _caltech256(src.path(CALTECH256_FILE), lambda f: f in caltech):
        yield Example(data, caltech[folder], "caltech", name)
