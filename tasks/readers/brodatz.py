"""Brodatz textures: 111 single GIFs (D14 is missing from the collection).

Source: http://www.ux.uis.no/~tranden/brodatz.html (`D1.gif` .. `D112.gif`). Each texture is cut
into a 3x3 grid of tiles, numbered column by column; per texture one permutation from a shared
`default_rng(0)` picks 5 train, 1 dev, 1 dev_test and 2 test tiles (the Nevis handler's rule).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.readers.common import Example, SourceFolder, decoded

__all__ = ["FILES", "read_brodatz"]

FILES = tuple(f"D{i}.gif" for i in range(1, 113) if i != 14)
_TILE_SPLITS = ["train"] * 5 + ["dev", "dev_test", "test", "test"]


def read_brodatz(src: SourceFolder) -> Iterator[Example]:
    rng = np.random.default_rng(0)
    for label, file in enumerate(FILES):
        image = decoded(src.path(file).read_bytes(), file, "L")
        w, h = image.size
        tw, th = w // 3, h // 3
        if tw == 0 or th == 0:
            raise DataError(f"brodatz: {file} is {w}x{h} pixels, too small to cut into 3x3 tiles")
        tiles = [(x, y) for x in range(0, 3 * tw, tw) for y in range(0, 3 * th, th) if x + tw < w and y + th < h]  # column by column
        order = rng.permutation(len(tiles))
        for rank, tile in enumerate(order):
            x, y = tiles[tile]
            split = _TILE_SPLITS[rank] if rank < len(_TILE_SPLITS) else "train"
            yield Example(image.crop((x, y, x + tw, y + th)), label, split, f"{file}[{tile}]")
