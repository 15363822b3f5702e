"""Pascal VOC 2005, 2006 (single label) and 2007, 2012 (multi-label).

Sources: http://host.robots.ox.ac.uk/pascal/VOC/ (2005: `voc2005_1.tar.gz` pool, `voc2005_2.tar.gz`
test; 2006: `voc2006_trainval.tar`, `voc2006_test.tar`) and the pjreddie.com mirror of
2007/2012 used by TFDS (`VOCtrainval_06-Nov-2007.tar`, `VOCtest_06-Nov-2007.tar`,
`VOCtrainval_11-May-2012.tar`). 2007/2012 labels: every object class in an image's annotation
(difficult ones included), as TFDS's `labels` feature.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from nevisbench.errors import DataError
from nevisbench.tasks.archives import tar_members
from nevisbench.tasks.readers.common import Example, SourceFolder

__all__ = ["VOC_CLASSES", "VOC2005_FOLDERS", "VOC2006_FILES", "VOC2007_FILES", "VOC2012_FILES",
           "read_voc2005", "read_voc2006", "read_voc2007", "read_voc2012"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# group -> (archive, image folder, class id -> source sub-folders)
VOC2005_FOLDERS = {
    "pool": ("voc2005_1.tar.gz", "VOC2005_1/PNGImages", {
        0: ("Caltech_cars", "ETHZ_sideviews-cars", "TUGraz_cars"),
        1: ("Caltech_motorbikes_side",),
        2: ("TUGraz_bike",),
        3: ("TUGraz_person",)}),
    "test": ("voc2005_2.tar.gz", "VOC2005_2/PNGImages", {
        0: ("car", "voiture"),
        1: ("motocyclette", "motorbike", "motorcycle"),
        2: ("bicycle", "bike", "velo"),
        3: ("INRIA_graz-person-test", "INRIA_inria-person-test", "pedestrian", "pieton")}),
}
VOC2006_FILES = (("pool", "voc2006_trainval.tar", "_trainval.txt"), ("test", "voc2006_test.tar", "_test.txt"))
VOC2007_FILES = (("VOCtrainval_06-Nov-2007.tar", ("train", "val")), ("VOCtest_06-Nov-2007.tar", ("test",)))
VOC2012_FILES = (("VOCtrainval_11-May-2012.tar", ("train", "val")),)


def read_voc2005(src: SourceFolder) -> Iterator[Example]:
    for group, (archive, base, classes) in VOC2005_FOLDERS.items():
        by_folder: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for name, read in tar_members(src.path(archive)):
            if not name.lower().endswith(".png"):
                continue
            for folders in classes.values():
                for folder in folders:
                    if name.startswith(f"{base}/{folder}/"):
                        by_folder[folder].append((name, read()))
        for label, folders in classes.items():  # class by class, folder by folder, tar order
            for folder in folders:
                for name, data in by_folder[folder]:
                    yield Example(data, label, group, name)


def read_voc2006(src: SourceFolder) -> Iterator[Example]:
    class_ids: dict[str, int] = {}
    for group, archive, suffix in VOC2006_FILES:
        positives: dict[str, int] = {}
        images: list[tuple[str, bytes]] = []
        for name, read in tar_members(src.path(archive)):
            if "/ImageSets/" in name and name.endswith(suffix):
                cls = PurePosixPath(name).name[: -len(suffix)]
                if group == "pool":
                    class_ids.setdefault(cls, len(class_ids))  # ids in the order the lists appear
                if cls not in class_ids:
                    raise DataError(f"{archive}: class list {name} names a class missing from the trainval lists")
                for line in read().decode("utf-8", "replace").splitlines():
                    fields = line.split()
                    if len(fields) >= 2 and fields[-1] == "1":
                        positives[fields[0]] = class_ids[cls]  # the list read last wins
            elif "/PNGImages/" in name and name.lower().endswith(".png"):
                images.append((name, read()))
        for name, data in images:
            image_id = PurePosixPath(name).stem
            if image_id in positives:
                yield Example(data, positives[image_id], group, name)


def _labels(xml: bytes, name: str) -> tuple[int, ...]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"cannot parse annotation {name}: {exc}") from None
    names = ((o.findtext("name") or "").strip() for o in root.iter("object"))
    ids = {VOC_CLASSES.index(name) for name in names if name in VOC_CLASSES}
    return tuple(sorted(ids))


def _read_tar(path: Path, year: str, lists: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, tuple[int, ...]], dict[str, bytes]]:
    """The image-id lists, the labels and the encoded images of one VOC tar."""
    ids: dict[str, list[str]] = {}
    labels: dict[str, tuple[int, ...]] = {}
    images: dict[str, bytes] = {}
    base = f"VOC{year}/"
    for name, read in tar_members(path):
        if base not in name:
            continue
        rest = name.split(base, 1)[1]
        if rest.startswith("ImageSets/Main/") and PurePosixPath(rest).name in {f"{s}.txt" for s in lists}:
            ids[PurePosixPath(rest).stem] = read().decode().split()
        elif rest.startswith("Annotations/") and rest.endswith(".xml"):
            labels[PurePosixPath(rest).stem] = _labels(read(), f"{name} of {path.name}")
        elif rest.startswith("JPEGImages/") and rest.lower().endswith(".jpg"):
            images[PurePosixPath(rest).stem] = read()
    return ids, labels, images


def _read_lists(src: SourceFolder, year: str, files: tuple[tuple[str, tuple[str, ...]], ...]) -> Iterator[Example]:
    """Images in the order of the official lists; each list's name is the examples' group."""
    for archive, lists in files:
        ids, labels, images = _read_tar(src.path(archive), year, lists)
        for split in lists:
            if split not in ids:
                raise DataError(f"{archive} has no ImageSets/Main/{split}.txt")
            for image_id in ids[split]:
                if image_id not in images or image_id not in labels:
                    raise DataError(f"{archive}: image or annotation of {image_id} is missing")
                yield Example(images.pop(image_id), labels[image_id], split, f"{archive}:{image_id}")


def read_voc2007(src: SourceFolder) -> Iterator[Example]:
    return _read_lists(src, "2007", VOC2007_FILES)


def read_voc2012(src: SourceFolder) -> Iterator[Example]:
    return _read_lists(src, "2012", VOC2012_FILES)
