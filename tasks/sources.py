"""Readers of the SHORT datasets' original files, as their publishers distribute them.

Each `Dataset` names its files (with the catalogue's URLs and checksums), how to read them into
examples in the order the Nevis handlers (or TFDS builders) visit them, and how those examples are
split. Readers never extract archives to disk: members are read in memory, and every member name
is checked (see `nevisbench.tasks.archives`). Facts come from `nevis_short.yaml`; every deviation from
the original pipeline is listed with its dataset and in docs/short-stream.md.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import pickle
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from nevisbench.tasks.archives import SourceFile, decode_image, filename_from_url, nested, tar_members, zip_members
from nevisbench.errors import DataError
from nevisbench.tasks import splits as S

__all__ = ["Example", "Dataset", "Sources", "DATASETS", "VOC_CLASSES"]


@dataclass
class Example:
    image: Any  # encoded bytes | PIL image | uint8 ndarray (H, W) or (H, W, C)
    label: Any  # class id, or a tuple of class ids for multi-label tasks
    group: str  # where the example came from (official split, pool); the split rule reads it
    name: str  # member name, for error messages


class Sources:
    """The folder holding one dataset's downloaded files."""

    def __init__(self, folder: Path, dataset: Dataset, located: dict[str, list[Path]] | None = None) -> None:
        self.folder, self.dataset = Path(folder), dataset
        self.located = located or {}  # file name or pattern -> paths, possibly in other folders

    def path(self, name: str) -> Path:
        if name in self.located:
            return self.located[name][0]
        path = self.folder / name
        if not path.is_file():
            raise DataError(f"{self.dataset.key}: {name} is missing from {self.folder}")
        return path

    def first(self, *names: str) -> Path:
        for name in names:
            if (self.folder / name).is_file():
                return self.folder / name
        raise DataError(f"{self.dataset.key}: none of {', '.join(names)} is in {self.folder}")

    def glob(self, pattern: str) -> list[Path]:
        if pattern in self.located:
            return list(self.located[pattern])
        return sorted(p for p in self.folder.iterdir() if p.is_file() and fnmatch(p.name, pattern))


@dataclass(frozen=True)
class Dataset:
    key: str
    files: tuple[SourceFile, ...]
    channels: int  # stored channels: 1 (grayscale datasets) or 3
    read: Callable[[Sources], Iterator[Example]] = field(repr=False)
    split: Callable[[np.ndarray], dict[str, np.ndarray]] = field(repr=False)  # groups -> indices
    rule: str = ""  # the split rule, in words (docs and metadata)
    deviations: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None


def _where(groups: np.ndarray, *names: str) -> np.ndarray:
    return np.flatnonzero(np.isin(groups, names)).astype(np.int64)


def by_group(groups: np.ndarray) -> dict[str, np.ndarray]:
    """Examples already carry their split as their group."""
    return S.merge({s: _where(groups, s) for s in S.SPLITS})


def pool_and_test(fractions: dict[str, float]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Random assignment over the 'pool' examples; 'test' examples are the test split."""
    return lambda groups: S.merge(S.random_assignment(_where(groups, "pool"), fractions), {"test": _where(groups, "test")})


def all_random(groups: np.ndarray) -> dict[str, np.ndarray]:
    return S.merge(S.random_assignment(np.arange(len(groups)), S.ALL_DATA))


def tfds_split(groups: np.ndarray) -> dict[str, np.ndarray]:
    return S.tfds_train_test(_where(groups, "train"), _where(groups, "test"))


class Dedup:
    """Drops exact duplicates (decoded pixels + label), keeping the first, as Nevis'
    `deduplicate_data_generator` does."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, Any, str]] = set()
        self.dropped = 0

    def keep(self, pixels: np.ndarray, label: Any, scope: str = "") -> bool:
        key = (scope, label, hashlib.md5(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest())
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def _pixels(data: bytes, name: str, mode: str) -> Any:
    return decode_image(data, name).convert(mode)


# -- COIL-100 -----------------------------------------------------------------------------------
COIL_BINS = {"train": {70, 71, 0, 1, 2}, "dev": set(range(16, 21)), "dev_test": set(range(50, 55))}


def read_coil100(src: Sources) -> Iterator[Example]:
    pattern = re.compile(r"obj(\d+)__(\d+)\.png$")
    for name, read in zip_members(src.path("coil-100.zip")):
        match = pattern.search(name)
        if not match:
            continue
        obj, angle = int(match.group(1)), int(match.group(2))
        angle_bin = angle // 5
        group = next((s for s, bins in COIL_BINS.items() if angle_bin in bins), "test")
        yield Example(read(), obj - 1, group, name)


# -- idx (MNIST, Fashion-MNIST) -----------------------------------------------------------------
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:  # already gunzipped by the user
            data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable gzip file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path.name} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def read_idx(src: Sources) -> Iterator[Example]:
    for group, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx(src.first(f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"))
        labels = _idx(src.first(f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise DataError(f"{prefix} images ({len(images)}) and labels ({len(labels)}) differ in count")
        for i in range(len(labels)):
            yield Example(images[i], int(labels[i]), group, f"{prefix}[{i}]")


# -- CIFAR (python pickle tar.gz) ---------------------------------------------------------------
def read_cifar(folder: str, archive: str, label_key: str, train_members: tuple[str, ...]) -> Callable[[Sources], Iterator[Example]]:
    def read(src: Sources) -> Iterator[Example]:
        batches = {}
        wanted = {f"{folder}/{m}": m for m in (*train_members, "test" if label_key == "fine_labels" else "test_batch")}
        for name, get in tar_members(src.path(archive)):
            if name in wanted:
                try:
                    batches[wanted[name]] = pickle.loads(get(), encoding="latin1")
                except Exception as exc:  # a corrupt pickle
                    raise DataError(f"{archive}: cannot read {name} ({exc})") from None
        test_member = "test" if label_key == "fine_labels" else "test_batch"
        for member in (*train_members, test_member):
            if member not in batches:
                raise DataError(f"{archive} has no {folder}/{member}")
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batches[member].items()}
            if "data" not in batch or label_key not in batch:
                raise DataError(f"{archive}: {folder}/{member} has no '{label_key}' or 'data' entry")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for i, label in enumerate(batch[label_key]):
                yield Example(data[i], int(label), "test" if member == test_member else "train", f"{member}[{i}]")

    return read


# -- USPS (libsvm bz2) --------------------------------------------------------------------------
def _libsvm_images(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    try:
        with bz2.open(path, "rt") as handle:
            for line_number, line in enumerate(handle, 1):
                parts = line.split()
                if not parts:
                    continue
                values = np.zeros(256, dtype=np.float64)  # libsvm omits zeros
                for item in parts[1:]:
                    index, value = item.split(":")
                    values[int(index) - 1] = float(value)
                pixels = np.clip((values + 1) / 2 * 255, 0, 255).astype(np.uint8).reshape(16, 16)
                yield pixels, int(float(parts[0])) - 1
    except (OSError, EOFError, ValueError, IndexError) as exc:
        raise DataError(f"{path.name} is not a readable bz2 libsvm file ({exc})") from None


def read_usps(src: Sources) -> Iterator[Example]:
    for group, name in (("pool", "usps.bz2"), ("test", "usps.t.bz2")):
        for i, (pixels, label) in enumerate(_libsvm_images(src.path(name))):
            yield Example(pixels, label, group, f"{name}:{i + 1}")


# -- Pascal VOC 2005 ----------------------------------------------------------------------------
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


def read_voc2005(src: Sources) -> Iterator[Example]:
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


# -- Caltech cars / motorbikes ------------------------------------------------------------------
CALTECH_CATEGORIES = (("cars_1999", "Cars_1999.zip", 0), ("cars_2001", "Cars_2001.zip", 0), ("motorcycles_2001", "motorbikes_side.zip", 1))


def read_caltech_categories(src: Sources) -> Iterator[Example]:
    for category, archive, label in CALTECH_CATEGORIES:  # sorted category order
        inner = [(n, r) for n, r in zip_members(src.path(archive)) if n.lower().endswith(".tar")]
        if not inner:
            raise DataError(f"{archive} holds no .tar (expected e.g. {category} images in a tar)")
        for tar_name, read_tar in inner:
            for name, read in tar_members(nested(read_tar()), f"{archive}/{tar_name}"):
                base = PurePosixPath(name).name
                if base.upper().startswith("README") or base.lower().endswith(".mat"):
                    continue
                yield Example(read(), label, "pool", f"{archive}/{tar_name}/{name}")


# -- UIUC cars ----------------------------------------------------------------------------------
def read_uiuc(src: Sources) -> Iterator[Example]:
    for name, read in tar_members(src.path("uiuc.tar.gz")):
        parts = PurePosixPath(name).parts
        if name.lower().endswith(".txt") or "TestImages_Scale" in parts or "TestImages" in parts:
            continue
        yield Example(read(), 1 if "pos" in name else 0, "pool", name)


# -- Pascal VOC 2006 ----------------------------------------------------------------------------
def read_voc2006(src: Sources) -> Iterator[Example]:
    class_ids: dict[str, int] = {}
    for group, archive, suffix in (("pool", "voc2006_trainval.tar", "_trainval.txt"), ("test", "voc2006_test.tar", "_test.txt")):
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


# -- Caltech 101 --------------------------------------------------------------------------------
def read_caltech101(src: Sources) -> Iterator[Example]:
    path = src.first("caltech-101.zip", "101_ObjectCategories.tar.gz")
    if path.suffix == ".zip":
        inner = [(n, r) for n, r in zip_members(path) if n.endswith("101_ObjectCategories.tar.gz")]
        if not inner:
            raise DataError(f"{path.name} holds no 101_ObjectCategories.tar.gz")
        members = tar_members(nested(inner[0][1]()), f"{path.name}/{inner[0][0]}")
    else:
        members = tar_members(path)
    by_class: dict[str, dict[str, bytes]] = defaultdict(dict)
    for name, read in members:
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[-3] == "101_ObjectCategories" and name.lower().endswith(".jpg"):
            by_class[parts[-2]][parts[-1]] = read()
    labels = {c: i for i, c in enumerate(sorted(c.lower() for c in by_class))}
    rng = np.random.RandomState(1234)  # TFDS: 30 random training images per class, seed 1234
    for folder in sorted(by_class):
        files = sorted(by_class[folder])
        if len(files) < 30:
            raise DataError(f"caltech101: class folder {folder} has {len(files)} images; the TFDS split needs >= 30")
        train = set(rng.choice(files, 30, replace=False).tolist())
        for file in files:
            yield Example(by_class[folder][file], labels[folder.lower()], "train" if file in train else "test", f"{folder}/{file}")


# -- Graz-02 ------------------------------------------------------------------------------------
GRAZ_CLASSES = (("bikes", "ig02-v1.0-bikes.zip"), ("cars", "ig02-v1.0-cars.zip"), ("people", "ig02-v1.0-people.zip"))


def read_graz02(src: Sources) -> Iterator[Example]:
    dedup = Dedup()
    for label, (cls, archive) in enumerate(GRAZ_CLASSES):
        members = dict(zip_members(src.path(archive)))
        train_list = next((r for n, r in members.items() if PurePosixPath(n).name == f"{cls}_train.txt"), None)
        listed = set(train_list().decode().split()) if train_list else set()
        images = sorted(n for n in members if n.endswith(".image.png"))
        first = [n for n in images if PurePosixPath(n).name[: -len(".image.png")] in listed]
        for name in first + images:  # train-list images first, then every image; duplicates dropped
            image = _pixels(members[name](), name, "RGB")
            if dedup.keep(np.asarray(image), label):
                yield Example(image, label, "pool", f"{archive}/{name}")


# -- 15 Scenes ----------------------------------------------------------------------------------
SCENES15 = ("PARoffice", "kitchen", "MITinsidecity", "MITforest", "MITcoast", "MITstreet", "store", "industrial",
            "bedroom", "MITmountain", "MIThighway", "MITopencountry", "CALsuburb", "MITtallbuilding", "livingroom")


def read_scenes15(src: Sources) -> Iterator[Example]:
    ids = {name: i for i, name in enumerate(SCENES15)}
    for name, read in zip_members(src.path("scene_categories.zip")):
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and parts[-2] in ids and name.lower().endswith(".jpg"):
            yield Example(read(), ids[parts[-2]], "pool", name)


# -- Pascal VOC 2007 / 2012 (multi-label) --------------------------------------------------------
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _voc_labels(xml: bytes, name: str) -> tuple[int, ...]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"cannot parse annotation {name}: {exc}") from None
    ids = {VOC_CLASSES.index(o.findtext("name").strip()) for o in root.iter("object")
           if o.findtext("name") and o.findtext("name").strip() in VOC_CLASSES}
    return tuple(sorted(ids))


def _voc_tar(path: Path, year: str, lists: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, tuple[int, ...]], dict[str, bytes]]:
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
            labels[PurePosixPath(rest).stem] = _voc_labels(read(), name)
        elif rest.startswith("JPEGImages/") and rest.lower().endswith(".jpg"):
            images[PurePosixPath(rest).stem] = read()
    return ids, labels, images


def _voc_examples(archive: str, ids: list[str], labels: dict, images: dict, group: str) -> Iterator[Example]:
    for image_id in ids:
        if image_id not in images or image_id not in labels:
            raise DataError(f"{archive}: image or annotation of {image_id} is missing")
        yield Example(images.pop(image_id), labels[image_id], group, f"{archive}:{image_id}")


def read_voc2007(src: Sources) -> Iterator[Example]:
    for archive, lists in (("VOCtrainval_06-Nov-2007.tar", ("train", "val")), ("VOCtest_06-Nov-2007.tar", ("test",))):
        ids, labels, images = _voc_tar(src.path(archive), "2007", lists)
        for split in lists:
            if split not in ids:
                raise DataError(f"{archive} has no ImageSets/Main/{split}.txt")
            yield from _voc_examples(archive, ids[split], labels, images, split)


def split_voc2007(groups: np.ndarray) -> dict[str, np.ndarray]:
    train, dev = S.first_fraction(_where(groups, "train"), 0.8)
    return S.merge({"train": train, "dev": dev, "dev_test": _where(groups, "val"), "test": _where(groups, "test")})


def read_voc2012(src: Sources) -> Iterator[Example]:
    archive = "VOCtrainval_11-May-2012.tar"
    ids, labels, images = _voc_tar(src.path(archive), "2012", ("train", "val"))
    for split in ("train", "val"):
        if split not in ids:
            raise DataError(f"{archive} has no ImageSets/Main/{split}.txt")
        yield from _voc_examples(archive, ids[split], labels, images, split)


def split_voc2012(groups: np.ndarray) -> dict[str, np.ndarray]:
    train, dev = S.first_fraction(_where(groups, "train"), 0.8)
    val = _where(groups, "val")
    half = len(val) // 2
    return S.merge({"train": train, "dev": dev, "dev_test": val[:half], "test": val[half:]})


# -- LFW ----------------------------------------------------------------------------------------
def read_lfw(src: Sources) -> Iterator[Example]:
    people: dict[str, list[tuple[str, bytes]]] = {}
    for name, read in tar_members(src.path("lfw.tgz")):
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and name.lower().endswith(".jpg"):
            people.setdefault(parts[-2], []).append((name, read()))
    label = 0
    for person, files in people.items():  # order of first appearance in the tar
        if len(files) < 5:
            continue
        n = len(files)
        for i, (name, data) in enumerate(files):
            group = "test" if i >= n - 2 else "dev_test" if i == n - 3 else "dev" if i == n - 4 else "train"
            yield Example(data, label, group, name)
        label += 1


# -- TU Berlin sketches -------------------------------------------------------------------------
def read_sketch(src: Sources) -> Iterator[Example]:
    members = [(n, r) for n, r in zip_members(src.path("sketches_png.zip"))
               if n.lower().endswith(".png") and len(PurePosixPath(n).parts) >= 3]
    classes = sorted({PurePosixPath(n).parts[-2] for n, _ in members})
    ids = {c: i for i, c in enumerate(classes)}
    for name, read in members:
        yield Example(read(), ids[PurePosixPath(name).parts[-2]], "pool", name)


# -- Brodatz ------------------------------------------------------------------------------------
BRODATZ = tuple(f"D{i}.gif" for i in range(1, 113) if i != 14)


def read_brodatz(src: Sources) -> Iterator[Example]:
    rng = np.random.default_rng(0)
    for label, file in enumerate(BRODATZ):
        image = _pixels(src.path(file).read_bytes(), file, "L")
        w, h = image.size
        tw, th = w // 3, h // 3
        tiles = [(x, y) for x in range(0, 3 * tw, tw) for y in range(0, 3 * th, th) if x + tw < w and y + th < h]  # column by column
        order = rng.permutation(len(tiles))
        splits = ["train"] * 5 + ["dev", "dev_test", "test", "test"]
        for rank, tile in enumerate(order):
            x, y = tiles[tile]
            yield Example(image.crop((x, y, x + tw, y + th)), label, splits[rank] if rank < len(splits) else "train", f"{file}[{tile}]")


# -- Caltech 256 --------------------------------------------------------------------------------
CALTECH256 = re.compile(r"(\d{3})_\d{4}\.jpg$")


def _caltech256(path: Path, keep: Callable[[str], Any] | None = None) -> Iterator[tuple[str, bytes, int, str]]:
    for name, read in tar_members(path):
        parts = PurePosixPath(name).parts
        match = CALTECH256.fullmatch(parts[-1])
        if not match or len(parts) < 2:
            continue
        folder = parts[-2]
        if keep is not None and not keep(folder):
            continue
        yield name, read(), int(match.group(1)) - 1, folder


def read_caltech256(src: Sources) -> Iterator[Example]:
    for name, data, label, _ in _caltech256(src.path("256_ObjectCategories.tar")):
        yield Example(data, label, "pool", name)


# -- MNIST-M ------------------------------------------------------------------------------------
def read_mnist_m(src: Sources) -> Iterator[Example]:
    labels: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    images: list[tuple[str, str, bytes]] = []
    for name, read in tar_members(src.path("mnist_m.tar.gz")):
        base = PurePosixPath(name).name
        for part in ("train", "test"):
            if base == f"mnist_m_{part}_labels.txt":
                for line in read().decode().splitlines():
                    if line.strip():
                        file, digit = line.split()
                        labels[part][file] = int(digit)
            elif f"mnist_m_{part}/" in name and base.lower().endswith(".png"):
                images.append((part, name, read()))
    dedup = Dedup()
    for part, name, data in images:  # tar order, train and test pooled
        base = PurePosixPath(name).name
        if base not in labels[part]:
            raise DataError(f"mnist_m: {name} has no line in mnist_m_{part}_labels.txt")
        image = _pixels(data, name, "RGB")
        if dedup.keep(np.asarray(image), labels[part][base]):
            yield Example(image, labels[part][base], "pool", name)


# -- Office-Caltech 10 --------------------------------------------------------------------------
OFFICE_CALTECH = (("back_pack", "backpack"), ("bike", "touring-bike"), ("calculator", "calculator"),
                  ("headphones", "head-phones"), ("keyboard", "computer-keyboard"), ("laptop_computer", "laptop-101"),
                  ("monitor", "computer-monitor"), ("mouse", "computer-mouse"), ("mug", "coffee-mug"),
                  ("projector", "video-projector"))


def read_office_caltech(src: Sources) -> Iterator[Example]:
    office = {o: i for i, (o, _) in enumerate(OFFICE_CALTECH)}
    caltech = {c: i for i, (_, c) in enumerate(OFFICE_CALTECH)}
    for name, read in tar_members(src.path("domain_adaptation_images.tar.gz")):
        parts = PurePosixPath(name).parts
        if len(parts) >= 4 and parts[-4] in ("amazon", "dslr", "webcam") and parts[-3] == "images" and parts[-2] in office:
            yield Example(read(), office[parts[-2]], "office", name)
    for name, data, _, folder in _caltech256(src.path("256_ObjectCategories.tar"), lambda f: f.split(".", 1)[-1] in caltech):
        yield Example(data, caltech[folder.split(".", 1)[-1]], "caltech", name)


def split_domains(train_group: str, test_group: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    return lambda groups: S.merge(S.random_assignment(_where(groups, train_group), S.TRAIN_AND_DEV_ONLY),
                                  S.random_assignment(_where(groups, test_group), S.TEST_AND_DEV_TEST))


# -- PACS (hdf5) --------------------------------------------------------------------------------
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def read_pacs(src: Sources) -> Iterator[Example]:
    import h5py

    files = src.glob("*.hdf5")
    if not files:
        raise DataError(f"pacs: no .hdf5 files in {src.folder}")
    dedup = Dedup()
    for path in files:  # sorted listing order
        domain = next((d for d in PACS_DOMAINS if d in path.name), None)
        if domain is None:
            raise DataError(f"pacs: cannot tell the domain of {path.name} (expected one of {', '.join(PACS_DOMAINS)} in the name)")
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


# -- ISIC 2017 melanoma -------------------------------------------------------------------------
ISIC_PARTS = (("Training", "ISIC-2017_Training_Data.zip", "ISIC-2017_Training_Part3_GroundTruth.csv"),
              ("Validation", "ISIC-2017_Validation_Data.zip", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
              ("Test", "ISIC-2017_Test_v2_Data.zip", "ISIC-2017_Test_v2_Part3_GroundTruth.csv"))


def read_isic(src: Sources) -> Iterator[Example]:
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


# -- held-out (2020) ----------------------------------------------------------------------------
def _loadmat(data: bytes, name: str) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises several types for broken files
        raise DataError(f"cannot read {name} as a MATLAB file ({exc})") from None


def _mat_strings(array: Any) -> list[str]:
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(array).ravel()]


def read_stanford_dogs(src: Sources) -> Iterator[Example]:
    lists = {PurePosixPath(n).name: r() for n, r in tar_members(src.path("lists.tar"))}
    images = {}
    for name, read in tar_members(src.path("images.tar")):
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and name.lower().endswith(".jpg"):
            images["/".join(parts[-2:])] = read()
    folders = sorted({k.split("/")[0] for k in images}, key=str.lower)
    ids = {f: i for i, f in enumerate(folders)}
    for group, mat in (("train", "train_list.mat"), ("test", "test_list.mat")):
        if mat not in lists:
            raise DataError(f"lists.tar has no {mat}")
        for file in _mat_strings(_loadmat(lists[mat], mat)["file_list"]):
            if file not in images:
                raise DataError(f"images.tar has no Images/{file} listed in {mat}")
            yield Example(images.pop(file), ids[file.split("/")[0]], group, file)


def read_cub(src: Sources) -> Iterator[Example]:
    tables, images = {}, {}
    for name, read in tar_members(src.path("CUB_200_2011.tgz")):
        parts = PurePosixPath(name).parts
        if parts[-1] in ("images.txt", "train_test_split.txt", "image_class_labels.txt") and "attributes" not in parts:
            tables[parts[-1]] = dict(line.split(" ", 1) for line in read().decode().splitlines() if line.strip())
        elif "images" in parts[:-1] and name.lower().endswith(".jpg"):
            images["/".join(parts[parts.index("images") + 1:])] = read()
    for table in ("images.txt", "train_test_split.txt", "image_class_labels.txt"):
        if table not in tables:
            raise DataError(f"CUB_200_2011.tgz has no {table}")
    for image_id, path in tables["images.txt"].items():
        path = path.strip()
        if path not in images:
            raise DataError(f"CUB_200_2011.tgz has no images/{path}")
        group = "train" if tables["train_test_split.txt"][image_id].strip() == "1" else "test"
        yield Example(images.pop(path), int(tables["image_class_labels.txt"][image_id]) - 1, group, path)


def read_stanford_cars(src: Sources) -> Iterator[Example]:
    annotations = _loadmat(src.path("cars_annos.mat").read_bytes(), "cars_annos.mat")["annotations"].ravel()
    info = {}
    for a in annotations:
        path = str(np.asarray(a["relative_im_path"]).ravel()[0])
        info[PurePosixPath(path).name] = (int(np.asarray(a["class"]).ravel()[0]) - 1, int(np.asarray(a["test"]).ravel()[0]))
    for name, read in tar_members(src.path("car_ims.tgz")):
        base = PurePosixPath(name).name
        if base in info:
            label, test = info[base]
            yield Example(read(), label, "test" if test else "pool", name)


def read_fgvc(src: Sources) -> Iterator[Example]:
    tables: dict[str, bytes] = {}
    images: list[tuple[str, bytes]] = []
    for name, read in tar_members(src.path("fgvc-aircraft-2013b.tar.gz")):
        base = PurePosixPath(name).name
        if base in ("families.txt", "images_family_trainval.txt", "images_family_test.txt"):
            tables[base] = read()
        elif "/images/" in name and base.lower().endswith(".jpg"):
            images.append((name, read()))
    for table in ("families.txt", "images_family_trainval.txt", "images_family_test.txt"):
        if table not in tables:
            raise DataError(f"fgvc-aircraft-2013b.tar.gz has no data/{table}")
    families = {f: i for i, f in enumerate(line.strip() for line in tables["families.txt"].decode().splitlines() if line.strip())}
    which = {}
    for group, table in (("pool", "images_family_trainval.txt"), ("test", "images_family_test.txt")):
        for line in tables[table].decode().splitlines():
            if line.strip():
                image_id, family = line.strip().split(" ", 1)
                which[image_id] = (group, families[family])
    for name, data in images:  # tar order
        image_id = PurePosixPath(name).stem
        if image_id in which:
            group, label = which[image_id]
            yield Example(data, label, group, name)


# -- the catalogue of readers -------------------------------------------------------------------
def _catalogue_files(entry: dict[str, Any], names: dict[str, str] | None = None) -> tuple[SourceFile, ...]:
    """SourceFiles from a dataset entry's `source.download` list of the catalogue."""
    out = []
    for item in entry.get("source", {}).get("download", []) or []:
        url = item["url"]
        name = (names or {}).get(url) or filename_from_url(url)
        out.append(SourceFile(name, url, md5=item.get("md5")))
    return tuple(out)


def build_datasets(catalogue: dict[str, Any]) -> dict[str, Dataset]:
    entries = {d["key"]: d for d in catalogue["datasets"]}

    def files(key: str, names: dict[str, str] | None = None, md5: dict[str, str] | None = None) -> tuple[SourceFile, ...]:
        found = _catalogue_files(entries[key], names)
        return tuple(SourceFile(f.name, f.url, md5=f.md5 or (md5 or {}).get(f.name)) for f in found)

    mnist_md5 = dict(zip(IDX_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))
    fashion_md5 = dict(zip(IDX_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                       "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))
    caltech256_file = SourceFile("256_ObjectCategories.tar", "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
                                 md5="67b4f42ca05d46448c6bb8ecd2220f6d")
    tfds_order = "TFDS stores records in a hashed order that cannot be rebuilt from the original files; the first 70/15/15% of the official train split are taken in file order instead: sizes match, members differ."
    pacs = entries["pacs"]["source"]["download"]
    D = Dataset
    datasets = [
        D("coil100", (SourceFile("coil-100.zip", entries["coil100"]["source"]["tfds_underlying_download"][0]["url"],
                                 sha256=entries["coil100"]["source"]["tfds_underlying_download"][0]["sha256_per_tfds"]),),
          3, read_coil100, by_group, "pose-based: train = angles 350-10, dev = 80-100, dev_test = 250-270 degrees, test = the other 57 poses"),
        D("mnist", tuple(SourceFile(f, f"https://storage.googleapis.com/cvdf-datasets/mnist/{f}", md5=mnist_md5[f], alternatives=(f[:-3],)) for f in IDX_FILES),
          1, read_idx, tfds_split, "tfds_train_test: official train 70/15/15 -> train/dev/dev_test, official test -> test", (tfds_order,)),
        D("pascal_voc2005", files("pascal_voc2005"), 3, read_voc2005, pool_and_test(S.FOR_TRAIN),
          "random assignment 70/15/15 (RandomState(0)) over voc2005_1; test = voc2005_2"),
        D("caltech_cars_motorbikes", tuple(f for f in files("caltech_cars_motorbikes") if f.name != "faces.tar"), 3, read_caltech_categories, all_random,
          "random assignment 56/12/12/20 (RandomState(0)) over all images, categories in sorted order"),
        D("uiuc_cars", files("uiuc_cars"), 1, read_uiuc, all_random, "random assignment 56/12/12/20 (RandomState(0)) over the training crops",
          ("The 170 single-scale TestImages (cars, but without 'pos' in their names) are left out instead of being kept with label 'neg' as the Nevis handler's path rule would: 1050 images, not 1220.",)),
        D("pascal_voc2006", files("pascal_voc2006"), 3, read_voc2006, pool_and_test(S.FOR_TRAIN),
          "random assignment 70/15/15 (RandomState(0)) over trainval images with a positive class; test = the test tar",
          ("Single label per image: the last positive class list read wins (as the handler does); class ids follow the order of the list files in the trainval tar.",)),
        D("caltech101", (SourceFile("caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                                    md5="3138e1922a9193bfa496528edbbc45d0",
                                    alternatives=("101_ObjectCategories.tar.gz",)),), 3, read_caltech101, tfds_split,
          "TFDS: 30 random images per class (RandomState(1234)) are the official train split, the rest test; then tfds_train_test",
          ("Classes and files are visited in sorted order (TFDS uses the directory listing order), so the 30 training images per class may differ from TFDS's; sizes match.", tfds_order),
          ),
        D("graz02", files("graz02"), 3, read_graz02, all_random,
          "random assignment 56/12/12/20 (RandomState(0)) over the de-duplicated pool (train-list images first, then all)"),
        D("scenes15", files("scenes15"), 1, read_scenes15, all_random, "random assignment 56/12/12/20 (RandomState(0)), sorted member order",
          label_names=SCENES15),
        D("pascal_voc2007", (SourceFile("VOCtrainval_06-Nov-2007.tar", "http://pjreddie.com/media/files/VOCtrainval_06-Nov-2007.tar", md5="c52e279531787c972589f7e41ab4ae64"),
                             SourceFile("VOCtest_06-Nov-2007.tar", "http://pjreddie.com/media/files/VOCtest_06-Nov-2007.tar", md5="b6e924de25625d8de591ea690078ad9f")),
          3, read_voc2007, split_voc2007, "official train: first 80% train, rest dev; official val -> dev_test; official test -> test",
          ("The 80/20 cut of the official train list follows the list order, not TFDS record order: sizes match, members differ.",), VOC_CLASSES),
        D("lfw", files("lfw"), 3, read_lfw, by_group, "per identity with >= 5 images, in tar order: last 2 -> test, 3rd-last -> dev_test, 4th-last -> dev, rest -> train"),
        D("tu_berlin_sketch", files("tu_berlin_sketch"), 1, read_sketch, all_random, "random assignment 56/12/12/20 (RandomState(0)), sorted member order",
          ("Class ids are the sorted class-folder names; the Nevis handler maps them through its own fixed, non-alphabetical list (not in the catalogue).",)),
        D("brodatz", files("brodatz"), 1, read_brodatz, by_group,
          "each texture cut into 3x3 tiles; per texture a permutation (one default_rng(0)): 5 train, 1 dev, 1 dev_test, 2 test",
          ("Textures are visited (and labelled) in numeric order D1..D112; the handler uses the directory listing order.",)),
        D("pascal_voc2012", (SourceFile("VOCtrainval_11-May-2012.tar", "http://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar", md5="6cd6e144f989b92b3379bac3b3de84fd"),),
          3, read_voc2012, split_voc2012, "official train: first 80% train, rest dev; official val: first half dev_test, second half test",
          ("The cuts follow the list order, not TFDS record order: sizes match, members differ.",), VOC_CLASSES),
        D("caltech256", (caltech256_file,), 3, read_caltech256, all_random, "random assignment 56/12/12/20 (RandomState(0)) in tar order"),
        D("cifar100", (SourceFile("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85"),),
          3, read_cifar("cifar-100-python", "cifar-100-python.tar.gz", "fine_labels", ("train",)), tfds_split,
          "tfds_train_test: official train 70/15/15 -> train/dev/dev_test, official test -> test",
          ("Read from the python-pickle archive (TFDS reads the binary one; same images and labels).", tfds_order)),
        D("cifar10", (SourceFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a"),),
          3, read_cifar("cifar-10-batches-py", "cifar-10-python.tar.gz", "labels", tuple(f"data_batch_{i}" for i in range(1, 6))), tfds_split,
          "tfds_train_test: official train 70/15/15 -> train/dev/dev_test, official test -> test",
          ("Read from the python-pickle archive (TFDS reads the binary one; same images and labels).", tfds_order)),
        D("usps", (SourceFile("usps.bz2", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.bz2", md5="ec16c51db3855ca6c91edd34d0e9b197"),
                   SourceFile("usps.t.bz2", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.t.bz2", md5="8ea070ee2aca1ac39742fdd1ef5ed118")),
          1, read_usps, pool_and_test(S.FOR_TRAIN), "random assignment 70/15/15 (RandomState(0)) over usps.bz2 in line order; test = usps.t.bz2"),
        D("mnist_m", (SourceFile("mnist_m.tar.gz", entries["mnist_m"]["source"]["download"][0]["url"]),), 3, read_mnist_m, all_random,
          "official train and test pooled, exact duplicates dropped, random assignment 56/12/12/20 (RandomState(0)) in tar order",
          ("Each image takes its label from its own folder's label file; the handler merges both files by bare file name, so test labels overwrite the labels of train images with the same name.",)),
        D("office_caltech10", (caltech256_file, SourceFile("domain_adaptation_images.tar.gz", entries["office_caltech10"]["source"]["download"][1]["url"])),
          3, read_office_caltech, split_domains("office", "caltech"),
          "Office-31 (amazon, dslr, webcam) 80/20 -> train/dev; Caltech-256's 10 classes 50/50 -> dev_test/test (each RandomState(0))"),
        D("pacs", (SourceFile("*.hdf5", None, pattern="*.hdf5", md5_any=tuple(i["md5"] for i in pacs if i.get("md5"))),),
          3, read_pacs, split_domains("pac", "sketch"),
          "photo+art_painting+cartoon de-duplicated 80/20 -> train/dev; sketch de-duplicated 50/50 -> dev_test/test (each RandomState(0))",
          ("hdf5 files are visited in sorted name order (the handler uses the directory listing order).",)),
        D("isic2017_melanoma", files("isic2017_melanoma"), 3, read_isic, by_group,
          "official training set permuted by default_rng(1): first 80% train, rest dev; official validation -> dev_test; official test (v2) -> test"),
        D("fashion_mnist", tuple(SourceFile(f, f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}", md5=fashion_md5[f], alternatives=(f[:-3],)) for f in IDX_FILES),
          1, read_idx, tfds_split, "tfds_train_test: official train 70/15/15 -> train/dev/dev_test, official test -> test", (tfds_order,)),
        D("stanford_dogs", tuple(SourceFile(n, f"http://vision.stanford.edu/aditya86/ImageNetDogs/{n}") for n in ("images.tar", "lists.tar")),
          3, read_stanford_dogs, tfds_split, "tfds_train_test over the official train_list.mat / test_list.mat", (tfds_order,)),
        D("cub200_2011", (SourceFile("CUB_200_2011.tgz", entries["cub200_2011"]["source"]["tfds_underlying_download"][0].split(" ")[0]),),
          3, read_cub, tfds_split, "tfds_train_test over the official train_test_split.txt", (tfds_order,)),
        D("stanford_cars", files("stanford_cars"), 3, read_stanford_cars, pool_and_test(S.FOR_TRAIN),
          "random assignment 70/15/15 (RandomState(0)) over the official train images in tar order; test = official test"),
        D("fgvc_aircraft_family", files("fgvc_aircraft_family"), 3, read_fgvc, pool_and_test(S.FOR_TRAIN),
          "random assignment 70/15/15 (RandomState(0)) over official trainval in tar order; test = official test"),
    ]
    return {d.key: d for d in datasets}


DATASETS: dict[str, Dataset] = {}  # filled by nevisbench.tasks.short on import
