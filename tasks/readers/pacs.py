"""PACS: photo, art painting, cartoon and sketch images of 7 classes (Li et al. 2017).

Source: 12 hdf5 files on Google Drive (names not published; each must match one of the
catalogue's md5s): `images` (N, 227, 227, 3) BGR uint8 and `labels` 1..7. Files are visited in
sorted name order; exact duplicates are dropped within each pool.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.readers.common import Dedup, Example, SourceFolder

__all__ = ["PATTERN", "DOMAINS", "read_pacs"]

PATTERN = "*.hdf5"
DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def read_pacs(src: SourceFolder) -> Iterator[Example]:
    import h5py

    files = src.glob(PATTERN)
    if not files:
        raise DataError(f"pacs: no .hdf5 files in {src.folder}")
    dedup = Dedup()
    for path in files:  # sorted listing order
        domain = next((d for d in DOMAINS if d in path.name), None)
        if domain is None:
            raise DataError(f"pacs: cannot tell the domain of {path.name} (expected one of {', '.join(DOMAINS)} in the name)")
        group = "sketch" if domain == "sketch" else "pac"
        try:
            with h5py.File(path, "r") as handle:
                images, labels = handle["images"][()], handle["labels"][()]
        except (OSError, KeyError) as exc:
            raise DataError(f"pacs: cannot read {path.name} as PACS hdf5 ({exc})") from None
        for i in range(len(labels)):
            pixels = np.ascontiguousarray(np.asarray(images[i], dtype=np.uint8)[..., ::-1])  # BGR -> RGB
            label = int(labels[i]) - 1
            if dedup.keep(pixels, label, group):
                yield Example(pixels, label, group, f"{path.name}[{i}]")
