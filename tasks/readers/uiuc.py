"""UIUC car detection crops (cars vs background).

Source: http://host.robots.ox.ac.uk/pascal/VOC/download/uiuc.tar.gz (`CarData/TrainImages/`
`pos-N.pgm` = car, `neg-N.pgm` = background). The test scenes (`TestImages`, `TestImages_Scale`)
are left out; see the dataset's deviation in the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "read_uiuc"]

ARCHIVE = "uiuc.tar.gz"


def read_uiuc(src: SourceFolder) -> Iterator[Example]:
    for name, read in tar_members(src.path(ARCHIVE)):
        parts = PurePosixPath(name).parts  # the training crops, exactly CarData/TrainImages/<file>
        if len(parts) == 3 and parts[:2] == ("CarData", "TrainImages") and not name.endswith(".txt"):
            yield Example(read(), 1 if "pos" in parts[2] else 0, "pool", name)
