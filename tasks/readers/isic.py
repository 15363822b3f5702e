"""ISIC 2017 skin lesion classification (melanoma, seborrheic keratosis, nevus).

Source: https://challenge.isic-archive.com/data/#2017 (per part: a zip of JPEGs
`<zip name>/<image_id>.jpg` and a Part 3 ground-truth CSV). Label 0 = melanoma, 1 = seborrheic
keratosis, 2 = neither. The training part is permuted by `default_rng(1)`: first 80% train, rest
dev; validation -> dev_test; test -> test. A byte-order mark, CRLF line ends and padded fields in
the CSV read as the plain file does.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder, text_lines

__all__ = ["ISIC_PARTS", "read_isic"]

ISIC_PARTS = (("Training", "ISIC-2017_Training_Data.zip", "ISIC-2017_Training_Part3_GroundTruth.csv"),
              ("Validation", "ISIC-2017_Validation_Data.zip", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
              ("Test", "ISIC-2017_Test_v2_Data.zip", "ISIC-2017_Test_v2_Part3_GroundTruth.csv"))
_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")


def _rows(src: SourceFolder, table: str) -> list[dict[str, str]]:
    rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(text_lines(src.path(table).read_bytes()))]
    if rows and not set(_COLUMNS) <= set(rows[0]):
        raise DataError(f"{table}: expected columns {', '.join(_COLUMNS)}")
    return rows


def read_isic(src: SourceFolder) -> Iterator[Example]:
    for part, archive, table in ISIC_PARTS:
        rows = _rows(src, table)
        top = archive.removesuffix(".zip")
        members = dict(zip_members(src.path(archive)))
        if part == "Training":
            order = np.random.default_rng(1).permutation(len(rows))
            cut = int(0.8 * len(rows))
            rows_in_order = [(rows[i], "train" if rank < cut else "dev") for rank, i in enumerate(order)]
        else:
            rows_in_order = [(row, "dev_test" if part == "Validation" else "test") for row in rows]
        for row, group in rows_in_order:
            path = f"{top}/{row['image_id']}.jpg"  # the exact member the handler reads
            if path not in members:
                raise DataError(f"{archive} has no image {path} listed in {table}")
            label = 0 if float(row["melanoma"]) == 1 else 1 if float(row["seborrheic_keratosis"]) == 1 else 2
            yield Example(members[path](), label, group, f"{archive}/{row['image_id']}.jpg")
