"""Tiny copies of every SHORT dataset in its publisher's file format (same file names, folder
layout and annotation files as the real downloads, a handful of small images per class).

`build(key, folder)` writes the files and returns what `data prepare` must make of them:
{"num_classes_present": int, "sizes": {split: n}}, sizes worked out by the split rule.
"""

from __future__ import annotations

import bz2
import gzip
import io
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from nevisbench.tasks import splits

BUILDERS: dict[str, Callable[[Path], dict]] = {}
_rng = np.random.default_rng(1234)


def builder(key: str):
    def wrap(fn):
        BUILDERS[key] = fn
        return fn

    return wrap


def build(key: str, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return BUILDERS[key](folder)


def pixels(h: int = 10, w: int = 12, channels: int = 3) -> np.ndarray:
    """Random (hence distinct) pixels."""
    shape = (h, w) if channels == 1 else (h, w, channels)
    return _rng.integers(0, 256, size=shape, dtype=np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png(h=10, w=12, channels=3) -> bytes:
    return encode(pixels(h, w, channels), "PNG")


def jpg(h=10, w=12, channels=3) -> bytes:
    return encode(pixels(h, w, channels), "JPEG")


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)


def random_sizes(n: int, fractions: dict) -> dict:
    return {k: int(len(v)) for k, v in splits.random_assignment(np.arange(n), fractions).items()}


def add(*dicts: dict) -> dict:
    out = {s: 0 for s in splits.SPLITS}
    for d in dicts:
        for k, v in d.items():
            out[k] += v
    return out


def tfds_sizes(train: int, test: int) -> dict:
    a, b = int(0.7 * train), int(0.15 * train)
    return {"train": a, "dev": b, "dev_test": train - a - b, "test": test}


# -- datasets -----------------------------------------------------------------------------------
@builder("coil100")
def coil100(folder: Path) -> dict:
    members = [(f"coil-100/obj{o}__{a}.png", png(8, 8)) for o in (1, 2) for a in range(0, 360, 5)]
    members.append(("coil-100/convertGroupppm2png.pl", b"#!/usr/bin/perl\n"))
    write_zip(folder / "coil-100.zip", members)
    return {"num_classes_present": 2, "sizes": {"train": 10, "dev": 10, "dev_test": 10, "test": 114}}


def _idx_images(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


def _idx(folder: Path) -> dict:
    for prefix, n in (("train", 20), ("t10k", 7)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx_images(_rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx_images(np.arange(n, dtype=np.uint8) % 10))
    return {"num_classes_present": 10, "sizes": tfds_sizes(20, 7)}


builder("mnist")(_idx)
builder("fashion_mnist")(_idx)


@builder("pascal_voc2005")
def voc2005(folder: Path) -> dict:
    pool = [f"VOC2005_1/PNGImages/{d}/img{i}.png" for d in ("Caltech_cars", "ETHZ_sideviews-cars", "TUGraz_cars", "TUGraz_bike",
                                                            "Caltech_motorbikes_side", "TUGraz_person") for i in range(5)]
    write_tar(folder / "voc2005_1.tar.gz", [(n, png()) for n in pool] + [("VOC2005_1/Annotations/x.txt", b"x")], "w:gz")
    test = [
        f"VOC2005_2/PNGImages/{d}/t{i}.png"
        for d in (
            "car",
            "voiture",
            "bicycle",
            "bike",
            "velo",
            "motocyclette",
            "motorbike",
            "motorcycle",
            "INRIA_graz-person-test",
            "INRIA_inria-person-test",
            "pedestrian",
            "pieton",
        )
        for i in range(1)
    ]
    write_tar(folder / "voc2005_2.tar.gz", [(n, png()) for n in test], "w:gz")
    return {"num_classes_present": 4, "sizes": add(random_sizes(30, splits.FOR_TRAIN), {"test": 12})}


@builder("caltech_cars_motorbikes")
def caltech_categories(folder: Path) -> dict:
    for archive, inner, n in (
        ("Cars_2001.zip", "Cars_2001/cars_brad.tar", 12),
        ("Cars_1999.zip", "Cars_1999/cars_markus.tar", 10),
        ("motorbikes_side.zip", "motorbikes_side/motorbikes_side.tar", 14),
    ):
        stem = inner.split("/")[-1][:-4]
        members = [(f"{stem}/image_{i:04d}.jpg", jpg()) for i in range(n)] + [(f"{stem}/README", b"readme"), (f"{stem}/boxes.mat", b"mat")]
        write_zip(folder / archive, [(inner, tar_bytes(members))])
    return {"num_classes_present": 2, "sizes": random_sizes(36, splits.ALL_DATA)}


@builder("uiuc_cars")
def uiuc(folder: Path) -> dict:
    def pgm() -> bytes:
        return encode(pixels(8, 20, 1), "PPM")

    members = [(f"CarData/TrainImages/pos-{i}.pgm", pgm()) for i in range(16)] + [
        (f"CarData/TrainImages/neg-{i}.pgm", pgm()) for i in range(14)
    ]
    members += [
        ("CarData/TestImages/test-0.pgm", pgm()),
        ("CarData/TestImages_Scale/test-0.pgm", pgm()),
        ("CarData/README.txt", b"r"),
        ("CarData/trueLocations.txt", b"0: (1,2)"),
    ]
    write_tar(folder / "uiuc.tar.gz", members, "w:gz")
    return {"num_classes_present": 2, "sizes": random_sizes(30, splits.ALL_DATA)}


VOC2006 = ("bicycle", "bus", "car", "cat", "cow", "dog", "horse", "motorbike", "person", "sheep")


def _voc2006_tar(path: Path, suffix: str, n: int) -> int:
    ids = [f"{i:06d}" for i in range(1, n + 1)]
    members = []
    for c, cls in enumerate(VOC2006):
        lines = []
        for i, image_id in enumerate(ids):
            positive = (i % 10 == c) or (i == 1 and cls == "sheep")  # image 2 is also a sheep: the last list wins
            if i == n - 1:
                positive = False  # the last image has no positive class and is left out
            lines.append(f"{image_id} {'1' if positive else '-1'}")
        members.append((f"VOCdevkit/VOC2006/ImageSets/{cls}{suffix}", "\n".join(lines).encode()))
    members += [(f"VOCdevkit/VOC2006/PNGImages/{i}.png", png()) for i in ids]
    write_tar(path, members)
    return n - 1


@builder("pascal_voc2006")
def voc2006(folder: Path) -> dict:
    pool = _voc2006_tar(folder / "voc2006_trainval.tar", "_trainval.txt", 31)
    test = _voc2006_tar(folder / "voc2006_test.tar", "_test.txt", 8)
    return {"num_classes_present": 10, "sizes": add(random_sizes(pool, splits.FOR_TRAIN), {"test": test})}


CALTECH101 = (
    "accordion airplanes anchor ant BACKGROUND_Google barrel bass beaver binocular bonsai brain brontosaurus "
    "buddha butterfly camera cannon car_side ceiling_fan cellphone chair chandelier cougar_body cougar_face crab "
    "crayfish crocodile crocodile_head cup dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu "
    "euphonium ewer Faces Faces_easy ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano "
    "hawksbill headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop Leopards "
    "llama lobster lotus mandolin mayfly menorah metronome minaret Motorbikes nautilus octopus okapi pagoda panda "
    "pigeon pizza platypus pyramid revolver rhino rooster saxophone schooner scissors scorpion sea_horse snoopy "
    "soccer_ball stapler starfish stegosaurus stop_sign strawberry sunflower tick trilobite umbrella watch "
    "water_lilly wheelchair wild_cat windsor_chair wrench yin_yang"
).split()


@builder("caltech101")
def caltech101(folder: Path) -> dict:
    assert len(CALTECH101) == 102
    tiny = [jpg(4, 4) for _ in range(8)]  # 31 per class x 102 classes: reuse a few encodings
    members = [(f"101_ObjectCategories/{c}/image_{i:04d}.jpg", tiny[i % 8]) for c in CALTECH101 for i in range(1, 32)]
    inner = tar_bytes(members, "w:gz")
    write_zip(folder / "caltech-101.zip", [("caltech-101/101_ObjectCategories.tar.gz", inner), ("caltech-101/Annotations.tar", b"")])
    return {"num_classes_present": 102, "sizes": tfds_sizes(30 * 102, 102)}  # 2142/459/459: the catalogue's sizes


@builder("graz02")
def graz02(folder: Path) -> dict:
    for cls in ("bikes", "cars", "people"):
        stems = [f"{cls}_{i:03d}" for i in range(1, 11)]
        images = {s: png() for s in stems}
        images[stems[-1]] = images[stems[0]]  # an exact duplicate: dropped
        members = [(f"{cls}/{s}.image.png", images[s]) for s in stems] + [(f"{cls}/{s}.mask.0.png", png()) for s in stems]
        members += [(f"{cls}_train.txt", "\n".join(stems[:5]).encode()), (f"{cls}_test.txt", "\n".join(stems[5:]).encode())]
        write_zip(folder / f"ig02-v1.0-{cls}.zip", members)
    return {"num_classes_present": 3, "sizes": random_sizes(27, splits.ALL_DATA)}


@builder("scenes15")
def scenes15(folder: Path) -> dict:
    from nevisbench.tasks.readers.scenes import CLASSES

    write_zip(folder / "scene_categories.zip", [(f"{c}/image_{i:04d}.jpg", jpg(channels=1)) for c in CLASSES for i in range(1, 3)])
    return {"num_classes_present": 15, "sizes": random_sizes(30, splits.ALL_DATA)}


def _voc_xml(classes: list[tuple[str, int]]) -> bytes:
    objects = "".join(f"<object><name>{c}</name><difficult>{d}</difficult></object>" for c, d in classes)
    return f"<annotation><folder>VOC</folder>{objects}</annotation>".encode()


def _voc_tar(path: Path, year: str, lists: dict[str, int], start: int) -> None:
    from nevisbench.tasks.readers.voc import VOC_CLASSES

    members, i = [], start
    for split, n in lists.items():
        ids = []
        for _ in range(n):
            image_id = f"{year}_{i:06d}"
            ids.append(image_id)
            objs = [(VOC_CLASSES[i % 20], 0), (VOC_CLASSES[(i + 3) % 20], 1)]  # the second one 'difficult': still a label
            members += [
                (f"VOCdevkit/VOC{year}/JPEGImages/{image_id}.jpg", jpg()),
                (f"VOCdevkit/VOC{year}/Annotations/{image_id}.xml", _voc_xml(objs)),
            ]
            i += 1
        members.append((f"VOCdevkit/VOC{year}/ImageSets/Main/{split}.txt", "\n".join(ids).encode()))
    write_tar(path, members)


@builder("pascal_voc2007")
def voc2007(folder: Path) -> dict:
    _voc_tar(folder / "VOCtrainval_06-Nov-2007.tar", "2007", {"train": 20, "val": 6}, 0)
    _voc_tar(folder / "VOCtest_06-Nov-2007.tar", "2007", {"test": 5}, 100)
    return {"num_classes_present": 20, "sizes": {"train": 16, "dev": 4, "dev_test": 6, "test": 5}}


@builder("pascal_voc2012")
def voc2012(folder: Path) -> dict:
    _voc_tar(folder / "VOCtrainval_11-May-2012.tar", "2012", {"train": 20, "val": 7}, 0)
    return {"num_classes_present": 20, "sizes": {"train": 16, "dev": 4, "dev_test": 3, "test": 4}}


@builder("lfw")
def lfw(folder: Path) -> dict:
    people = {"Aaron_Peirsol": 6, "Zico": 5, "Abdullah_Gul": 2, "George_W_Bush": 7}
    members = [(f"lfw/{p}/{p}_{i:04d}.jpg", jpg()) for p, n in people.items() for i in range(1, n + 1)]
    write_tar(folder / "lfw.tgz", members, "w:gz")
    return {"num_classes_present": 3, "sizes": {"train": 2 + 1 + 3, "dev": 3, "dev_test": 3, "test": 6}}


@builder("tu_berlin_sketch")
def sketch(folder: Path) -> dict:
    classes = ("airplane", "alarm clock", "crane (machine)")
    members = [(f"png/{c}/{i}.png", png(channels=1)) for c in classes for i in range(1, 11)]
    members += [("png/filelist.txt", b"airplane/1.png"), ("png/airplane/Thumbs.db", b"\0")]
    write_zip(folder / "sketches_png.zip", members)
    return {"num_classes_present": 3, "sizes": random_sizes(30, splits.ALL_DATA)}


@builder("brodatz")
def brodatz(folder: Path) -> dict:
    from nevisbench.tasks.readers.brodatz import FILES

    for name in FILES:
        (folder / name).write_bytes(encode(pixels(20, 20, 1), "GIF"))
    return {"num_classes_present": 111, "sizes": {"train": 555, "dev": 111, "dev_test": 111, "test": 222}}  # the catalogue's


def _caltech256_members(classes: dict[str, int]) -> list[tuple[str, bytes]]:
    members = []
    for folder, n in classes.items():
        number = folder.split(".")[0]
        members += [(f"256_ObjectCategories/{folder}/{number}_{i:04d}.jpg", jpg()) for i in range(1, n + 1)]
    members += [("256_ObjectCategories/056.dog/RENAME2", b"x"), ("256_ObjectCategories/198.spider/greg", b"x")]
    return members


@builder("caltech256")
def caltech256(folder: Path) -> dict:
    write_tar(folder / "256_ObjectCategories.tar", _caltech256_members({"001.ak47": 12, "002.american-flag": 10, "257.clutter": 10}))
    return {"num_classes_present": 3, "sizes": random_sizes(32, splits.ALL_DATA), "labels": {0, 1, 256}}


def _cifar(folder: Path, top: str, archive: str, label_key: str, train_members: list[str], n_classes: int) -> dict:
    members = []
    per = 20 // len(train_members)
    for name in [*train_members, "test" if label_key == "fine_labels" else "test_batch"]:
        n = 5 if name.startswith("test") else per
        batch = {"data": _rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [int(x) for x in _rng.integers(0, n_classes, n)]}
        members.append((f"{top}/{name}", pickle.dumps(batch, protocol=2)))
    members.append((f"{top}/{'meta' if label_key == 'fine_labels' else 'batches.meta'}", pickle.dumps({"label_names": []})))
    write_tar(folder / archive, members, "w:gz")
    return {"num_classes_present": None, "sizes": tfds_sizes(per * len(train_members), 5)}


builder("cifar10")(
    lambda f: _cifar(f, "cifar-10-batches-py", "cifar-10-python.tar.gz", "labels", [f"data_batch_{i}" for i in range(1, 6)], 10)
)
builder("cifar100")(lambda f: _cifar(f, "cifar-100-python", "cifar-100-python.tar.gz", "fine_labels", ["train"], 100))


@builder("usps")
def usps(folder: Path) -> dict:
    def lines(n: int) -> bytes:
        rows = []
        for i in range(n):
            values = _rng.uniform(-1, 1, 256)
            rows.append(f"{i % 10 + 1} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(values) if j % 7))  # some omitted (zero)
        return ("\n".join(rows) + "\n").encode()

    (folder / "usps.bz2").write_bytes(bz2.compress(lines(30)))
    (folder / "usps.t.bz2").write_bytes(bz2.compress(lines(6)))
    return {"num_classes_present": 10, "sizes": add(random_sizes(30, splits.FOR_TRAIN), {"test": 6})}


@builder("mnist_m")
def mnist_m(folder: Path) -> dict:
    members = []
    train = {f"{i:08d}.png": png(28, 28) for i in range(24)}
    train["00000023.png"] = train["00000000.png"]  # exact duplicate, same label below: dropped
    test = {f"{i:08d}.png": png(28, 28) for i in range(8)}  # the same names as train ones
    members += [(f"mnist_m/mnist_m_train/{n}", d) for n, d in train.items()] + [(f"mnist_m/mnist_m_test/{n}", d) for n, d in test.items()]
    train_labels = {n: i % 10 for i, n in enumerate(train)}
    train_labels["00000023.png"] = 0
    members.append(("mnist_m/mnist_m_train_labels.txt", "\n".join(f"{n} {v}" for n, v in train_labels.items()).encode()))
    members.append(("mnist_m/mnist_m_test_labels.txt", "\n".join(f"{n} 9" for n in test).encode()))
    write_tar(folder / "mnist_m.tar.gz", members, "w:gz")
    return {"num_classes_present": 10, "sizes": random_sizes(31, splits.ALL_DATA)}


OFFICE_FOLDERS = {
    "back_pack": "003.backpack",
    "bike": "224.touring-bike",
    "calculator": "027.calculator",
    "headphones": "101.head-phones",
    "keyboard": "045.computer-keyboard",
    "laptop_computer": "127.laptop-101",
    "monitor": "046.computer-monitor",
    "mouse": "047.computer-mouse",
    "mug": "041.coffee-mug",
    "projector": "238.video-projector",
}


@builder("office_caltech10")
def office_caltech(folder: Path) -> dict:
    members = [
        (f"{d}/images/{c}/frame_{i:04d}.jpg", jpg()) for d in ("amazon", "dslr", "webcam") for c in OFFICE_FOLDERS for i in range(1, 2)
    ]
    members += [("amazon/images/letter_tray/frame_0001.jpg", jpg())]  # an Office-31 class outside the 10: ignored
    write_tar(folder / "domain_adaptation_images.tar.gz", members, "w:gz")
    write_tar(folder / "256_ObjectCategories.tar", _caltech256_members({**{v: 2 for v in OFFICE_FOLDERS.values()}, "001.ak47": 3}))
    return {
        "num_classes_present": 10,
        "sizes": add(random_sizes(30, splits.TRAIN_AND_DEV_ONLY), random_sizes(20, splits.TEST_AND_DEV_TEST)),
    }


@builder("pacs")
def pacs(folder: Path) -> dict:
    import h5py

    counts = {}
    for domain, n in (("art_painting", 7), ("cartoon", 7), ("photo", 8), ("sketch", 10)):
        images = _rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
        labels = np.arange(n) % 7 + 1
        if domain == "photo":
            images[-1], labels[-1] = images[0], labels[0]  # duplicate: dropped
        with h5py.File(folder / f"{domain}_train.hdf5", "w") as handle:
            handle["images"], handle["labels"] = images, labels
        counts[domain] = n
    pool = counts["art_painting"] + counts["cartoon"] + counts["photo"] - 1
    return {
        "num_classes_present": 7,
        "sizes": add(random_sizes(pool, splits.TRAIN_AND_DEV_ONLY), random_sizes(10, splits.TEST_AND_DEV_TEST)),
    }


@builder("isic2017_melanoma")
def isic(folder: Path) -> dict:
    from nevisbench.tasks.readers.isic import ISIC_PARTS

    start = 0
    for (_part, archive, table), n in zip(ISIC_PARTS, (10, 4, 5), strict=False):
        ids = [f"ISIC_{start + i:07d}" for i in range(n)]
        start += n
        top = archive[:-4]
        members = [(f"{top}/{i}.jpg", jpg()) for i in ids] + [(f"{top}/{i}_superpixels.png", png()) for i in ids[:2]]
        write_zip(folder / archive, members)
        rows = ["image_id,melanoma,seborrheic_keratosis"] + [f"{i},{float(k % 3 == 0)},{float(k % 3 == 1)}" for k, i in enumerate(ids)]
        (folder / table).write_text("\n".join(rows) + "\n")
    return {"num_classes_present": 3, "sizes": {"train": 8, "dev": 2, "dev_test": 4, "test": 5}}


@builder("stanford_dogs")
def dogs(folder: Path) -> dict:
    from scipy.io import savemat

    breeds = ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02116738-African_hunting_dog")
    files = [f"{b}/{b.split('-')[0]}_{i}.jpg" for b in breeds for i in range(1, 6)]
    write_tar(folder / "images.tar", [(f"Images/{f}", jpg()) for f in files])

    def mat(chosen: list[str]) -> bytes:
        buffer = io.BytesIO()
        cells = np.empty((len(chosen), 1), dtype=object)
        for i, f in enumerate(chosen):
            cells[i, 0] = np.array([f])
        savemat(buffer, {"file_list": cells, "labels": np.array([[breeds.index(f.split("/")[0]) + 1] for f in chosen])})
        return buffer.getvalue()

    train, test = [f for i, f in enumerate(files) if i % 5 != 4], [f for i, f in enumerate(files) if i % 5 == 4]
    write_tar(folder / "lists.tar", [("train_list.mat", mat(train)), ("test_list.mat", mat(test)), ("file_list.mat", mat(files))])
    return {"num_classes_present": 3, "sizes": tfds_sizes(12, 3)}


@builder("cub200_2011")
def cub(folder: Path) -> dict:
    classes = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "200.Common_Yellowthroat")
    paths = [f"{c}/{c.split('.')[1]}_{i:04d}_{i}.jpg" for c in classes for i in range(1, 6)]
    members = [(f"CUB_200_2011/images/{p}", jpg()) for p in paths]
    members += [
        ("CUB_200_2011/images.txt", "\n".join(f"{i + 1} {p}" for i, p in enumerate(paths)).encode()),
        ("CUB_200_2011/train_test_split.txt", "\n".join(f"{i + 1} {int(i % 5 != 4)}" for i in range(len(paths))).encode()),
        ("CUB_200_2011/image_class_labels.txt", "\n".join(f"{i + 1} {int(p[:3])}" for i, p in enumerate(paths)).encode()),
        ("CUB_200_2011/attributes/images.txt", b"not the real one"),
    ]
    write_tar(folder / "CUB_200_2011.tgz", members, "w:gz")
    return {"num_classes_present": 3, "sizes": tfds_sizes(12, 3)}


@builder("stanford_cars")
def cars(folder: Path) -> dict:
    from scipy.io import savemat

    n = 36
    write_tar(folder / "car_ims.tgz", [(f"car_ims/{i:06d}.jpg", jpg()) for i in range(1, n + 1)], "w:gz")
    annotations = np.zeros((1, n), dtype=[("relative_im_path", "O"), ("bbox_x1", "O"), ("class", "O"), ("test", "O")])
    for i in range(n):
        annotations[0, i] = (f"car_ims/{i + 1:06d}.jpg", 1, (i % 4) + 1, int(i % 6 == 5))
    buffer = io.BytesIO()
    savemat(buffer, {"annotations": annotations})
    (folder / "cars_annos.mat").write_bytes(buffer.getvalue())
    return {"num_classes_present": 4, "sizes": add(random_sizes(30, splits.FOR_TRAIN), {"test": 6})}


@builder("fgvc_aircraft_family")
def fgvc(folder: Path) -> dict:
    families = ["A300", "Boeing 707", "Cessna 172"]
    ids = [f"{1000000 + i:07d}" for i in range(36)]
    top = "fgvc-aircraft-2013b/data"
    members = [(f"{top}/families.txt", ("\n".join(families) + "\n").encode())]
    members += [(f"{top}/images/{i}.jpg", jpg()) for i in ids]
    members += [
        (f"{top}/images_family_trainval.txt", "\n".join(f"{i} {families[k % 3]}" for k, i in enumerate(ids[:30])).encode()),
        (f"{top}/images_family_test.txt", "\n".join(f"{i} {families[k % 3]}" for k, i in enumerate(ids[30:])).encode()),
    ]
    write_tar(folder / "fgvc-aircraft-2013b.tar.gz", members, "w:gz")
    return {"num_classes_present": 3, "sizes": add(random_sizes(30, splits.FOR_TRAIN), {"test": 6})}
