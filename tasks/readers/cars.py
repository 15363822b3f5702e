"""Stanford Cars: 196 car models (held out, 2020).

Source: http://ai.stanford.edu/~jkrause/cars/car_dataset.html (`car_ims.tgz`, `cars_annos.mat`
with `relative_im_path`, 1-based `class` and the `test` flag). The host is reported dead; see the
catalogue's `fragile_urls`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np

from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, loadmat

__all__ = ["IMAGES", "ANNOTATIONS", "read_stanford_cars"]

IMAGES, ANNOTATIONS = "car_ims.tgz", "cars_annos.mat"


def read_stanford_cars(src: SourceFolder) -> Iterator[Example]:
    annotations = loadmat(src.path(ANNOTATIONS).read_bytes(), ANNOTATIONS)["annotations"].ravel()
    info = {}
    for a in annotations:
        path = str(np.asarray(a["relative_im_path"]).ravel()[0])
        info[PurePosixPath(path).name] = (int(np.asarray(a["class"]).ravel()[0]) - 1, int(np.asarray(a["test"]).ravel()[0]))
    for name, read in tar_members(src.path(IMAGES)):
        base = PurePosixPath(name).name
        if base in info:
            label, test = info[base]
            yield Example(read(), label, "test" if test else "pool", name)
