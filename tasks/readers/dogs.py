"""Stanford Dogs: 120 breeds (held out, 2020).

Source: http://vision.stanford.edu/aditya86/ImageNetDogs/ (`images.tar`: `Images/<wnid>-<Breed>/*.jpg`;
`lists.tar`: `train_list.mat`, `test_list.mat`). Class ids: breed folders sorted case-insensitively.
The images are streamed in stored order; `order` is their place in the official lists.
"""

from __future__ import annotations

from collections.abc import Iterator

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, loadmat, mat_strings

__all__ = ["IMAGES", "LISTS", "read_stanford_dogs"]

IMAGES, LISTS = "images.tar", "lists.tar"
_GROUPS = (("train", "train_list.mat"), ("test", "test_list.mat"))


def read_stanford_dogs(src: SourceFolder) -> Iterator[Example]:
    wanted = {mat for _, mat in _GROUPS}
    lists = {name: read() for name, read in tar_members(src.path(LISTS)) if name in wanted}
    where: dict[str, tuple[str, int, int]] = {}
    for rank, (group, mat) in enumerate(_GROUPS):
        if mat not in lists:
            raise DataError(f"{LISTS} has no {mat}")
        for i, file in enumerate(mat_strings(loadmat(lists[mat], mat)["file_list"])):
            where[f"Images/{file}"] = (group, rank, i)
    folders = sorted({name.split("/")[1] for name in where}, key=str.lower)
    ids = {f: i for i, f in enumerate(folders)}
    for name, read in tar_members(src.path(IMAGES)):
        if name in where:
            group, rank, i = where.pop(name)
            yield Example(read(), ids[name.split("/")[1]], group, name[len("Images/"):], order=(rank, i))
    if where:
        first = sorted(where)[0]
        raise DataError(f"{IMAGES} has no {first} listed in {_GROUPS[where[first][1]][1]} of {LISTS}")
