"""Pascal VOC 2005, 2006 (single label) and 2007, 2012 (multi-label).

Sources: http://host.robots.ox.ac.uk/pascal/VOC/ (2005: `voc2005_1.tar.gz` pool, `voc2005_2.tar.gz`
test; 2006: `voc2006_trainval.tar`, `voc2006_test.tar`) and the pjreddie.com mirror of
2007/2012 used by TFDS (`VOCtrainval_06-Nov-2007.tar`, `VOCtest_06-Nov-2007.tar`,
`VOCtrainval_11-May-2012.tar`). 2007/2012 labels: every object class in an image's annotation
(difficult ones included), as TFDS's `labels` feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder, text_lines

__all__ = ["VOC_CLASSES", "VOC2005_FOLDERS", "VOC2006_FILES", "VOC2007_FILES", "VOC2012_FILES",
           "read_voc2005", "read_voc2006", "read_voc2007", "read_voc2012"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# group -> (archive, image folder, [(class id, source sub-folders)] in the order the Nevis handler
# visits them: car, bike, motorbike, person; its ids are car 0, motorbike 1, bike 2, person 3)
VOC2005_FOLDERS = {
    "pool": ("voc2005_1.tar.gz", "VOC2005_1/PNGImages", (
        (0, ("Caltech_cars", "ETHZ_sideviews-cars", "TUGraz_cars")),
        (2, ("TUGraz_bike",)),
        (1, ("Caltech_motorbikes_side",)),
        (3, ("TUGraz_person",)))),
    "test": ("voc2005_2.tar.gz", "VOC2005_2/PNGImages", (
        (0, ("car", "voiture")),
        (2, ("bicycle", "bike", "velo")),
        (1, ("motocyclette", "motorbike", "motorcycle")),
        (3, ("INRIA_graz-person-test", "INRIA_inria-person-test", "pedestrian", "pieton")))),
}
VOC2006_FILES = (("pool", "voc2006_trainval.tar", "_trainval.txt"), ("test", "voc2006_test.tar", "_test.txt"))
VOC2007_FILES = (("VOCtrainval_06-Nov-2007.tar", ("train", "val")), ("VOCtest_06-Nov-2007.tar", ("test",)))
VOC2012_FILES = (("VOCtrainval_11-May-2012.tar", ("train", "val")),)


def read_voc2005(src: SourceFolder) -> Iterator[Example]:
    """Streamed in stored order; `order` is the handler's visit: class by class (car, bike,
    motorbike, person), folder by folder, stored order within a folder."""
    for group, (archive, base, classes) in VOC2005_FOLDERS.items():
        folders = {f"{base}/{folder}/": (rank, label, k) for rank, (label, names) in enumerate(classes) for k, folder in enumerate(names)}
        for position, (name, read) in enumerate(tar_members(src.path(archive))):
            if not name.endswith(".png"):
                continue
            where = folders.get(name.rsplit("/", 1)[0] + "/") if "/" in name else None
            if where is not None:
                rank, label, k = where
                yield Example(read(), label, group, name, order=(group, rank, k, position))


def _voc2006_positives(path: Path, archive: str, suffix: str, class_ids: dict[str, int], pool: bool) -> dict[str, int]:
    """image id -> class id from the class lists of one VOC 2006 tar (the list read last wins)."""
    positives: dict[str, int] = {}
    for name, read in tar_members(path):
        if not (name.startswith(_VOC2006_LISTS) and name.endswith(suffix)) or "/" in name[len(_VOC2006_LISTS):]:
            continue
        cls = name[len(_VOC2006_LISTS): -len(suffix)]
        if pool:
            class_ids.setdefault(cls, len(class_ids))  # ids in the order the lists appear
        if cls not in class_ids:
            raise DataError(f"{archive}: class list {name} names a class missing from the trainval lists")
        for line in text_lines(read()):
            fields = line.split()
            if len(fields) >= 2 and fields[-1] == "1":
                positives[fields[0]] = class_ids[cls]
    return positives


_VOC2006_LISTS = "VOCdevkit/VOC2006/ImageSets/"
_VOC2006_IMAGES = "VOCdevkit/VOC2006/PNGImages/"


def read_voc2006(src: SourceFolder) -> Iterator[Example]:
    class_ids: dict[str, int] = {}
    for group, archive, suffix in VOC2006_FILES:
        positives = _voc2006_positives(src.path(archive), archive, suffix, class_ids, group == "pool")
        for name, read in tar_members(src.path(archive)):  # stored order, as the handler's
            image_id = name[len(_VOC2006_IMAGES): -len(".png")]
            if name.startswith(_VOC2006_IMAGES) and name.endswith(".png") and image_id in positives:
                yield Example(read(), positives[image_id], group, name)


def _labels(xml: bytes, name: str) -> tuple[int, ...]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"cannot parse annotation {name}: {exc}") from None
    names = ((o.findtext("name") or "").strip() for o in root.iter("object"))
    ids = {VOC_CLASSES.index(name) for name in names if name in VOC_CLASSES}
    return tuple(sorted(ids))


def _read_tables(path: Path, year: str, lists: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, tuple[int, ...]]]:
    """The image-id lists and the labels of one VOC tar (images are skipped, not read)."""
    ids: dict[str, list[str]] = {}
    labels: dict[str, tuple[int, ...]] = {}
    base = f"VOCdevkit/VOC{year}/"
    wanted = {f"{base}ImageSets/Main/{split}.txt": split for split in lists}
    for name, read in tar_members(path):
        if name in wanted:
            ids[wanted[name]] = [line.split()[0] for line in text_lines(read())]
        elif name.startswith(f"{base}Annotations/") and name.endswith(".xml") and name.count("/") == 3:
            labels[name[len(f"{base}Annotations/"): -len(".xml")]] = _labels(read(), f"{name} of {path.name}")
    return ids, labels


def _read_lists(src: SourceFolder, year: str, files: tuple[tuple[str, tuple[str, ...]], ...]) -> Iterator[Example]:
    """The listed images, streamed in stored order; `order` is their place in the official lists
    (each list's name is the examples' group)."""
    images = f"VOCdevkit/VOC{year}/JPEGImages/"
    for archive, lists in files:
        ids, labels = _read_tables(src.path(archive), year, lists)
        where: dict[str, tuple[str, int, int]] = {}
        for rank, split in enumerate(lists):
            if split not in ids:
                raise DataError(f"{archive} has no VOCdevkit/VOC{year}/ImageSets/Main/{split}.txt")
            where.update((image_id, (split, rank, i)) for i, image_id in enumerate(ids[split]))
        missing = {image_id for image_id in where if image_id not in labels}
        for name, read in tar_members(src.path(archive)):
            image_id = name[len(images): -len(".jpg")]
            if name.startswith(images) and name.endswith(".jpg") and image_id in where and image_id not in missing:
                split, rank, i = where.pop(image_id)
                yield Example(read(), labels[image_id], split, f"{archive}:{image_id}", order=(archive, rank, i))
        if where:
            raise DataError(f"{archive}: image or annotation of {sorted(where)[0]} is missing")


def read_voc2007(src: SourceFolder) -> Iterator[Example]:
    return _read_lists(src, "2007", VOC2007_FILES)


def read_voc2012(src: SourceFolder) -> Iterator[Example]:
    return _read_lists(src, "2012", VOC2012_FILES)
