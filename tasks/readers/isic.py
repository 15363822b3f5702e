"""ISIC 2017 skin lesion classification (melanoma, seborrheic keratosis, nevus).

Source: https://challenge.isic-archive.com/data/#2017 (per part: a zip of JPEGs and a Part 3
ground-truth CSV). Label 0 = melanoma, 1 = seborrheic keratosis, 2 = neither. The training part
is permuted by `default_rng(1)`: first 80% train, rest dev; validation -> dev_test; test -> test.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ISIC_PARTS", "read_isic"]

ISIC_PARTS = (("Training", "ISIC-2017_Training_Data.zip", "ISIC-2017_Training_Part3_GroundTruth.csv"),
              ("Validation", "ISIC-2017_Validation_Data.zip", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
              ("Test", "ISIC-2017_Test_v2_Data.zip", "ISIC-2017_Test_v2_Part3_GroundTruth.csv"))


def read_isic(src: SourceFolder) -> Iterator[Example]:
    for part, archive, table in ISIC_PARTS:
        with open(src.path(table), newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and not {"image_id", "melanoma", "seborrheic_keratosis"} <= set(rows[0]):
            raise DataError(f"{table}: expected columns image_id, melanoma, seborrheic_keratosis")
        members = {PurePosixPath(n).stem: r for n, r in zip_members(src.path(archive)) if n.lower().endswith(".jpg")}
        if part == "Training":
            order = np.random.default_rng(1).permutation(len(rows))
            cut = int(0.8 * len(rows))
            groups = {int(i): ("train" if rank < cut else "dev") for rank, i in enumerate(order)}
            rows_in_order = [(rows[i], groups[int(i)]) for i in order]
        else:
            rows_in_order = [(row, "dev_test" if part == "Validation" else "test") for row in rows]
        for row, group in rows_in_order:
            image_id = row["image_id"]
            if image_id not in members:
                raise DataError(f"{archive} has no image {image_id}.jpg listed in {table}")
            label = 0 if float(row["melanoma"]) == 1 else 1 if float(row["seborrheic_keratosis"]) == 1 else 2
            yield Example(members[image_id](), label, group, f"{archive}/{image_id}.jpg")
