"""Split membership as the Nevis handlers give it: examples are visited in the handler's order
(not only counted) before the seeded draw, on fixtures whose member order mimics the real
archives'. The expected members are worked out here from the handler's rule, independently of the
readers (issue 29)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import short_fixtures as F
from PIL import Image

from nevisbench.tasks import splits as S
from nevisbench.tasks.datasets import get_dataset
from nevisbench.tasks.prepare import split_in_visit_order
from nevisbench.tasks.readers.common import SourceFolder


def reader_splits(key: str, folder: Path) -> tuple[dict[str, list[str]], dict[str, object]]:
    """{split: [example names]} and {name: label}, as `data prepare` assigns them."""
    dataset = get_dataset(key)
    examples = list(dataset.read(SourceFolder(folder, key)))
    parts = split_in_visit_order(dataset, np.asarray([e.group for e in examples]), [e.order for e in examples])
    return {s: sorted(examples[i].name for i in idx) for s, idx in parts.items()}, {e.name: e.label for e in examples}


def drawn(names: list[str], fractions: dict[str, float]) -> dict[str, list[str]]:
    """The Nevis draw over `names` in visiting order."""
    return {s: sorted(names[i] for i in idx) for s, idx in S.random_assignment(np.arange(len(names)), fractions).items()}


def tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


# -- Pascal VOC 2005: car, bike, motorbike, person --------------------------------------------------
VOC2005_POOL = {"Caltech_cars": 9, "Caltech_motorbikes_side": 12, "ETHZ_sideviews-cars": 5, "TUGraz_bike": 12,
                "TUGraz_cars": 6, "TUGraz_person": 7}  # sorted: the real tar's folder order


def test_voc2005_pool_is_drawn_in_the_handlers_class_order(tmp_path: Path) -> None:
    pool = [(f"VOC2005_1/PNGImages/{d}/{d}_{i:03d}.png", F.png(4, 4)) for d, n in VOC2005_POOL.items() for i in range(n)]
    F.write_tar(tmp_path / "voc2005_1.tar.gz", [("VOC2005_1/Annotations/x.txt", b"x"), *pool], "w:gz")
    F.write_tar(tmp_path / "voc2005_2.tar.gz", [("VOC2005_2/PNGImages/car/t.png", F.png(4, 4))], "w:gz")
    visit = ["Caltech_cars", "ETHZ_sideviews-cars", "TUGraz_cars", "TUGraz_bike", "Caltech_motorbikes_side", "TUGraz_person"]
    order = [name for folder in visit for name, _ in pool if name.split("/")[2] == folder]
    got, labels = reader_splits("pascal_voc2005", tmp_path)
    assert {s: got[s] for s in ("train", "dev", "dev_test")} == drawn(order, S.FOR_TRAIN)
    assert got["test"] == ["VOC2005_2/PNGImages/car/t.png"]
    ids = {"Caltech_cars": 0, "ETHZ_sideviews-cars": 0, "TUGraz_cars": 0, "Caltech_motorbikes_side": 1, "TUGraz_bike": 2,
           "TUGraz_person": 3}
    assert all(labels[name] == ids[name.split("/")[2]] for name, _ in pool)  # the handler's label ids, kept


# -- Graz-02: every train part, then every class's images, de-duplicated ----------------------------
def test_graz02_chains_train_parts_then_all_images_before_the_draw(tmp_path: Path) -> None:
    raw: dict[str, bytes] = {}
    for cls in ("bikes", "cars", "people"):
        stems = [f"{cls}_{i:03d}" for i in range(1, 13)]
        images = {s: F.png(6, 6) for s in stems}
        images[stems[7]] = images[stems[2]]  # an exact duplicate of a train-list image: dropped
        members = [(f"{cls}/{s}.image.png", d) for s, d in images.items()] + [(f"{cls}_train.txt", "\r\n".join(stems[::2]).encode())]
        F.write_zip(tmp_path / f"ig02-v1.0-{cls}.zip", members)
        raw |= {f"ig02-v1.0-{cls}.zip/{n}": d for n, d in members if n.endswith(".image.png")}
    visit = [n for cls in ("bikes", "cars", "people") for n in sorted(raw) if n.startswith(f"ig02-v1.0-{cls}") and int(n[-13:-10]) % 2 == 1]
    visit += [n for cls in ("bikes", "cars", "people") for n in sorted(raw) if n.startswith(f"ig02-v1.0-{cls}")]
    seen, order = set(), []
    for name in visit:
        key = (hashlib.md5(Image.open(io.BytesIO(raw[name])).tobytes()).hexdigest(), name.split("/")[1])
        if key not in seen:
            seen.add(key)
            order.append(name)
    got, _ = reader_splits("graz02", tmp_path)
    assert len(order) == 33
    assert {s: got[s] for s in S.SPLITS} == drawn(order, S.ALL_DATA)


# -- tasks drawn over the members in stored (tar) or sorted (zip) order -----------------------------
def _stored(archive: str, keep: Callable[[str], bool], named: Callable[[str], str] = lambda n: n) -> Callable[[Path], list[str]]:
    def order(folder: Path) -> list[str]:
        path = folder / archive
        names = sorted(zipfile.ZipFile(path).namelist()) if zipfile.is_zipfile(path) else tar_names(path)
        return [named(n) for n in names if keep(n)]

    return order


DRAWN_IN_STORED_ORDER = {
    "caltech256": (_stored("256_ObjectCategories.tar", lambda n: n.endswith(".jpg")), S.ALL_DATA, ()),
    "uiuc_cars": (_stored("uiuc.tar.gz", lambda n: n.startswith("CarData/TrainImages/")), S.ALL_DATA, ()),
    "scenes15": (_stored("scene_categories.zip", lambda n: True), S.ALL_DATA, ()),
    "tu_berlin_sketch": (_stored("sketches_png.zip", lambda n: n.count("/") == 2 and not n.endswith("Thumbs.db")), S.ALL_DATA, ()),
    "fgvc_aircraft_family": (_stored("fgvc-aircraft-2013b.tar.gz", lambda n: "/images/" in n and int(n[-11:-4]) < 1000030),
                             S.FOR_TRAIN, ("test",)),
    "stanford_cars": (_stored("car_ims.tgz", lambda n: int(n[-10:-4]) % 6 != 0), S.FOR_TRAIN, ("test",)),
}


@pytest.mark.parametrize("key", sorted(DRAWN_IN_STORED_ORDER))
def test_random_assignment_follows_the_stored_member_order(key: str, tmp_path: Path) -> None:
    F.build(key, tmp_path)
    order, fractions, other = DRAWN_IN_STORED_ORDER[key]
    got, _ = reader_splits(key, tmp_path)
    assert {s: v for s, v in got.items() if s not in other} == drawn(order(tmp_path), fractions)


def test_caltech_categories_are_drawn_category_by_category(tmp_path: Path) -> None:
    F.build("caltech_cars_motorbikes", tmp_path)
    order = []
    for archive, inner in (("Cars_1999.zip", "Cars_1999/cars_markus.tar"), ("Cars_2001.zip", "Cars_2001/cars_brad.tar"),
                           ("motorbikes_side.zip", "motorbikes_side/motorbikes_side.tar")):  # categories sorted
        with zipfile.ZipFile(tmp_path / archive) as z, tarfile.open(fileobj=io.BytesIO(z.read(inner))) as tar:
            order += [f"{archive}/{inner}/{n}" for n in tar.getnames() if n.endswith(".jpg")]
    assert reader_splits("caltech_cars_motorbikes", tmp_path)[0] == drawn(order, S.ALL_DATA)


def test_office_caltech_draws_each_pool_in_tar_order(tmp_path: Path) -> None:
    F.build("office_caltech10", tmp_path)
    office = [n for n in tar_names(tmp_path / "domain_adaptation_images.tar.gz") if "letter_tray" not in n]
    caltech = [n for n in tar_names(tmp_path / "256_ObjectCategories.tar") if n.endswith(".jpg") and "ak47" not in n]
    expected = drawn(office, S.TRAIN_AND_DEV_ONLY) | drawn(caltech, S.TEST_AND_DEV_TEST)
    assert reader_splits("office_caltech10", tmp_path)[0] == {s: expected.get(s, []) for s in S.SPLITS}


# -- official lists: the cut follows the list, whatever order the tar stores the images in ----------
def _reverse_images(path: Path, images: str) -> None:
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    rest = [m for m in members if not m[0].startswith(images)]
    F.write_tar(path, [m for m in members if m[0].startswith(images)][::-1] + rest, "w:gz" if path.suffix in (".tgz", ".gz") else "w")


def test_voc2012_cuts_follow_the_official_lists_not_the_tar(tmp_path: Path) -> None:
    F.build("pascal_voc2012", tmp_path)
    _reverse_images(tmp_path / "VOCtrainval_11-May-2012.tar", "VOCdevkit/VOC2012/JPEGImages/")
    got, _ = reader_splits("pascal_voc2012", tmp_path)
    ids = [f"VOCtrainval_11-May-2012.tar:2012_{i:06d}" for i in range(27)]
    assert got == {"train": ids[:16], "dev": ids[16:20], "dev_test": ids[20:23], "test": ids[23:]}


def test_cub_and_dogs_cut_the_official_train_list_in_its_order(tmp_path: Path) -> None:
    F.build("cub200_2011", tmp_path / "cub")
    _reverse_images(tmp_path / "cub" / "CUB_200_2011.tgz", "CUB_200_2011/images/")
    got, _ = reader_splits("cub200_2011", tmp_path / "cub")
    classes = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "200.Common_Yellowthroat")  # images.txt's order
    train = [f"{c}/{c.split('.')[1]}_{i:04d}_{i}.jpg" for c in classes for i in range(1, 5)]  # the 5th of each: test
    assert got["train"] == sorted(train[:8]) and got["dev"] == train[8:9] and got["dev_test"] == sorted(train[9:])
    F.build("stanford_dogs", tmp_path / "dogs")
    _reverse_images(tmp_path / "dogs" / "images.tar", "Images/")
    got, _ = reader_splits("stanford_dogs", tmp_path / "dogs")
    breeds = ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02116738-African_hunting_dog")  # train_list.mat's order
    train = [f"{b}/{b.split('-')[0]}_{i}.jpg" for b in breeds for i in range(1, 5)]
    assert got["train"] == sorted(train[:8]) and got["dev"] == train[8:9] and got["dev_test"] == sorted(train[9:])
