"""Stanford Dogs: 120 breeds (held out, 2020).

Source: http://vision.stanford.edu/aditya86/ImageNetDogs/ (`images.tar`: `Images/<wnid>-<Breed>/*.jpg`;
`lists.tar`: `train_list.mat`, `test_list.mat`). Class ids: breed folders sorted case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, loadmat, mat_strings

__all__ = ["IMAGES", "LISTS", "read_stanford_dogs"]

IMAGES, LISTS = "images.tar", "lists.tar"


def read_stanford_dogs(src: SourceFolder) -> Iterator[Example]:
    lists = {PurePosixPath(n).name: r() for n, r in tar_members(src.path(LISTS))}
    images = {}
    for name, read in tar_members(src.path(IMAGES)):
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and name.lower().endswith(".jpg"):
            images["/".join(parts[-2:])] = read()
    folders = sorted({k.split("/")[0] for k in images}, key=str.lower)
    ids = {f: i for i, f in enumerate(folders)}
    for group, mat in (("train", "train_list.mat"), ("test", "test_list.mat")):
        if mat not in lists:
            raise DataError(f"{LISTS} has no {mat}")
        for file in mat_strings(loadmat(lists[mat], mat)["file_list"]):
            if file not in images:
                raise DataError(f"{IMAGES} has no Images/{file} listed in {mat} of {LISTS}")
            yield Example(images.pop(file), ids[file.split("/")[0]], group, file)
