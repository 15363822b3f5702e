"""TU Berlin sketches (Eitz et al. 2012): 250 classes of human sketches.

Source: https://cybertron.cg.tu-berlin.de/eitz/projects/classifysketch/ (`sketches_png.zip`,
`png/<class>/<n>.png`). Class ids: sorted class-folder names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from nevisbench.tasks.archives import zip_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["ARCHIVE", "read_sketch"]

ARCHIVE = "sketches_png.zip"


def read_sketch(src: SourceFolder) -> Iterator[Example]:
    members = [(n, r) for n, r in zip_members(src.path(ARCHIVE))  # exactly png/<class>/<file>, as the handler reads
               if len(PurePosixPath(n).parts) == 3 and n.startswith("png/") and PurePosixPath(n).name != "Thumbs.db"]
    ids = {c: i for i, c in enumerate(sorted({PurePosixPath(n).parts[-2] for n, _ in members}))}
    for name, read in members:
        yield Example(read(), ids[PurePosixPath(name).parts[-2]], "pool", name)
