"""Caltech datasets: cars and motorbikes (2001), Caltech-101, Caltech-256, and Office-Caltech 10
(Office-31's images plus Caltech-256's ten shared classes).

Sources: https://data.caltech.edu (`Cars_1999.zip`, `Cars_2001.zip`, `motorbikes_side.zip`, each
holding a tar of JPEGs; `caltech-101.zip` holding `101_ObjectCategories.tar.gz`;
`256_ObjectCategories.tar`) and Office-31's `domain_adaptation_images.tar.gz`
(https://faculty.cc.gatech.edu/~judy/domainadapt/).
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members, zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["CATEGORIES", "CALTECH101_FILES", "CALTECH256_FILE", "OFFICE_FILE", "OFFICE_CALTECH",
           "read_caltech_categories", "read_caltech101", "read_caltech256", "read_office_caltech"]

CATEGORIES = (("cars_1999", "Cars_1999.zip", 0), ("cars_2001", "Cars_2001.zip", 0), ("motorcycles_2001", "motorbikes_side.zip", 1))
CALTECH101_FILES = ("caltech-101.zip", "101_ObjectCategories.tar.gz")  # the zip, or the tar it holds
CALTECH256_FILE = "256_ObjectCategories.tar"
OFFICE_FILE = "domain_adaptation_images.tar.gz"
# Office-31 folder -> Caltech-256 folder (without its number), in class-id order
OFFICE_CALTECH = (("back_pack", "backpack"), ("bike", "touring-bike"), ("calculator", "calculator"),
                  ("headphones", "head-phones"), ("keyboard", "computer-keyboard"), ("laptop_computer", "laptop-101"),
                  ("monitor", "computer-monitor"), ("mouse", "computer-mouse"), ("mug", "coffee-mug"),
                  ("projector", "video-projector"))
_CALTECH256_NAME = re.compile(r"(\d{3})_\d{4}\.jpg$")


def read_caltech_categories(src: SourceFolder) -> Iterator[Example]:
    for category, archive, label in CATEGORIES:  # sorted category order
        inner = [(n, r) for n, r in zip_members(src.path(archive)) if n.lower().endswith(".tar")]
        if not inner:
            raise DataError(f"{archive} holds no .tar (expected e.g. {category} images in a tar)")
        for tar_name, read_tar in inner:
            for name, read in tar_members(io.BytesIO(read_tar()), f"{archive}/{tar_name}"):
                base = PurePosixPath(name).name
                if base.upper().startswith("README") or base.lower().endswith(".mat"):
                    continue
                yield Example(read(), label, "pool", f"{archive}/{tar_name}/{name}")


def read_caltech101(src: SourceFolder) -> Iterator[Example]:
    path = src.first(*CALTECH101_FILES)
    if path.suffix == ".zip":
        inner = [(n, r) for n, r in zip_members(path) if n.endswith("101_ObjectCategories.tar.gz")]
        if not inner:
            raise DataError(f"{path.name} holds no 101_ObjectCategories.tar.gz")
        members = tar_members(io.BytesIO(inner[0][1]()), f"{path.name}/{inner[0][0]}")
    else:
        members = tar_members(path)
    by_class: dict[str, dict[str, bytes]] = defaultdict(dict)
    for name, read in members:
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[-3] == "101_ObjectCategories" and name.lower().endswith(".jpg"):
            by_class[parts[-2]][parts[-1]] = read()
    labels = {c: i for i, c in enumerate(sorted(c.lower() for c in by_class))}
    rng = np.random.RandomState(1234)  # TFDS: 30 random training images per class, seed 1234
    for folder in sorted(by_class):
        files = sorted(by_class[folder])
        if len(files) < 30:
            raise DataError(f"caltech101: class folder {folder} has {len(files)} images; the TFDS split needs >= 30")
        train = set(rng.choice(files, 30, replace=False).tolist())
        for file in files:
            yield Example(by_class[folder][file], labels[folder.lower()], "train" if file in train else "test", f"{folder}/{file}")


def _caltech256(path: Path, keep: Callable[[str], Any] | None = None) -> Iterator[tuple[str, bytes, int, str]]:
    """(member, bytes, class id from the file name, class folder) in tar order."""
    for name, read in tar_members(path):
        parts = PurePosixPath(name).parts
        match = _CALTECH256_NAME.fullmatch(parts[-1])
        if not match or len(parts) < 2:
            continue
        folder = parts[-2]
        if keep is not None and not keep(folder):
            continue
        yield name, read(), int(match.group(1)) - 1, folder


def read_caltech256(src: SourceFolder) -> Iterator[Example]:
    for name, data, label, _ in _caltech256(src.path(CALTECH256_FILE)):
        yield Example(data, label, "pool", name)


def read_office_caltech(src: SourceFolder) -> Iterator[Example]:
    office = {o: i for i, (o, _) in enumerate(OFFICE_CALTECH)}
    caltech = {c: i for i, (_, c) in enumerate(OFFICE_CALTECH)}
    for name, read in tar_members(src.path(OFFICE_FILE)):
        parts = PurePosixPath(name).parts
        if len(parts) >= 4 and parts[-4] in ("amazon", "dslr", "webcam") and parts[-3] == "images" and parts[-2] in office:
            yield Example(read(), office[parts[-2]], "office", name)
    for name, data, _, folder in _caltech256(src.path(CALTECH256_FILE), lambda f: f.split(".", 1)[-1] in caltech):
        yield Example(data, caltech[folder.split(".", 1)[-1]], "caltech", name)
