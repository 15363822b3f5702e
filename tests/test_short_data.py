"""Every SHORT dataset, read from a tiny fixture in its publisher's format, lands in the packed
cache with the right classes and split sizes; the cache refuses to be read when damaged."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import short_fixtures as F

from nevisbench.errors import DataError
from nevisbench.tasks import short
from nevisbench.tasks.archives import SourceFile, file_digest
from nevisbench.tasks.cache import load_packed, task_status
from nevisbench.tasks.datasets import dataset_entry, dataset_keys, get_dataset
from nevisbench.tasks.prepare import prepare, prepare_task, to_stored
from nevisbench.tasks.splits import ALL_DATA, FOR_TRAIN, SPLITS, TEST_AND_DEV_TEST, TRAIN_AND_DEV_ONLY, random_assignment

ALL_KEYS = sorted(dataset_keys())


def test_every_stream_task_has_a_reader_and_a_fixture() -> None:
    keys = {e["key"] for e in short.short_events()} | {e["key"] for e in short.short_events(held_out=True)}
    assert keys == set(dataset_keys()) == set(F.BUILDERS)
    assert len(keys) == 27  # 23 distinct datasets before 2020 (MNIST twice makes 24 events) + 4 held out


@pytest.mark.parametrize(("n", "fractions", "expected"), [
    (4485, ALL_DATA, {"train": 2496, "dev": 525, "dev_test": 555, "test": 909}),      # scenes15
    (20000, ALL_DATA, {"train": 11207, "dev": 2329, "dev_test": 2405, "test": 4059}),  # sketch
    (30607, ALL_DATA, {"train": 17122, "dev": 3574, "dev_test": 3683, "test": 6228}),  # caltech256
    (7291, FOR_TRAIN, {"train": 5139, "dev": 1068, "dev_test": 1084}),                 # usps
    (1410, TRAIN_AND_DEV_ONLY, {"train": 1115, "dev": 295}),                          # office
    (1123, TEST_AND_DEV_TEST, {"dev_test": 543, "test": 580}),                        # caltech side of office
])
def test_random_assignment_reproduces_the_catalogue_sizes(n: int, fractions: dict, expected: dict) -> None:
    parts = random_assignment(np.arange(n), fractions)
    assert {k: len(v) for k, v in parts.items()} == expected
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))


@pytest.mark.parametrize("key", ALL_KEYS)
def test_prepare_reads_the_original_format(key: str, tmp_path: Path) -> None:
    expected = F.build(key, tmp_path / "src")
    status = prepare_task(key, tmp_path / "root", tmp_path / "src", size=16, verify=False)
    assert status["status"] == "ready"
    assert status["splits"] == expected["sizes"]
    packed = load_packed(tmp_path / "root", key)
    meta, entry = packed.meta, dataset_entry(key)
    assert meta["num_classes"] == entry["num_classes"]
    if expected["num_classes_present"] is not None:
        assert meta["classes_present"] == expected["num_classes_present"]
    channels = get_dataset(key).channels
    assert packed.images.shape == (meta["num_examples"], channels, 16, 16)
    if entry["multi_label"]:
        assert packed.labels.shape == (meta["num_examples"], entry["num_classes"])
        assert set(np.unique(packed.labels)) <= {0, 1} and packed.labels.sum(1).min() >= 1
    else:
        assert packed.labels.min() >= 0 and packed.labels.max() < entry["num_classes"]
    if "labels" in expected:
        assert set(np.unique(packed.labels).tolist()) == expected["labels"]
    every = np.concatenate([packed.splits[s] for s in SPLITS])
    assert len(np.unique(every)) == len(every) == meta["num_examples"]  # disjoint and complete
    assert packed.images.std() > 0  # real pixels, not zeros
    task = short.load_prepared(key, root=str(tmp_path / "root"), image_size=16, seed=0)
    task.validate()
    assert len(task.train) == expected["sizes"]["train"] and task.dev_test is not None


def test_per_dataset_facts(tmp_path: Path) -> None:
    """Spot checks of rules that sizes alone would not catch."""
    # COIL-100: object N -> class N-1; angles 350..10 are training poses
    F.build("coil100", tmp_path / "coil")
    prepare_task("coil100", tmp_path / "root", tmp_path / "coil", size=16, verify=False)
    packed = load_packed(tmp_path / "root", "coil100")
    assert set(packed.labels[packed.splits["train"]].tolist()) == {0, 1}
    # LFW: identities with fewer than 5 images are left out; 3 people kept
    F.build("lfw", tmp_path / "lfw")
    prepare_task("lfw", tmp_path / "root", tmp_path / "lfw", size=16, verify=False)
    lfw = load_packed(tmp_path / "root", "lfw")
    assert sorted(np.bincount(lfw.labels).tolist()) == [5, 6, 7]
    assert np.bincount(lfw.labels[lfw.splits["test"]]).tolist() == [2, 2, 2]
    # MNIST-M: a train image takes its train label even though a test file has the same name (label 9)
    F.build("mnist_m", tmp_path / "mm")
    prepare_task("mnist_m", tmp_path / "root", tmp_path / "mm", size=16, verify=False)
    assert np.bincount(load_packed(tmp_path / "root", "mnist_m").labels, minlength=10)[9] == 2 + 8
    # USPS: 16x16 values in [-1, 1] are rescaled to 0..255
    assert to_stored(np.full((16, 16), 255, np.uint8), 16, 1, "x").min() == 255


def test_prepare_resumes_task_by_task_and_keeps_finished_tasks(tmp_path: Path) -> None:
    for key in ("mnist", "usps"):
        F.build(key, tmp_path / "src" / key)
    (tmp_path / "src" / "usps" / "usps.t.bz2").write_bytes(b"not bz2")  # usps will fail
    with pytest.raises(DataError, match="1 of 2 task"):
        prepare(["mnist", "usps"], tmp_path / "root", source_dir=tmp_path / "src", verify=False, size=16, jobs=1)
    assert task_status(tmp_path / "root", "mnist")["status"] == "ready"
    assert task_status(tmp_path / "root", "usps")["status"] == "missing"
    before = (tmp_path / "root" / "mnist" / "meta.json").stat().st_mtime_ns
    F.build("usps", tmp_path / "src" / "usps")
    rows = prepare(["mnist", "usps"], tmp_path / "root", source_dir=tmp_path / "src", verify=False, size=16, jobs=2)
    assert [r["result"] for r in rows] == ["already prepared", "prepared"]  # usps packed in a worker process
    assert (tmp_path / "root" / "mnist" / "meta.json").stat().st_mtime_ns == before
    assert task_status(tmp_path / "root", "usps")["status"] == "ready"
    assert not any((tmp_path / "root" / ".partial").iterdir())


def test_checksums_are_verified_against_the_catalogue(tmp_path: Path) -> None:
    F.build("usps", tmp_path / "src")
    with pytest.raises(DataError, match=r"usps: checksum mismatch, usps.bz2: md5 [0-9a-f]+, expected ec16c51db3855ca6c91edd34d0e9b197"):
        prepare_task("usps", tmp_path / "root", tmp_path / "src", size=16, verify=True)
    assert task_status(tmp_path / "root", "usps")["status"] == "missing"


def test_missing_files_are_named_with_their_urls(tmp_path: Path) -> None:
    F.build("mnist", tmp_path / "src")
    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing from .*t10k-labels-idx1-ubyte.gz \(https://storage.googleapis.com/cvdf-datasets/mnist/"):
        prepare_task("mnist", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    F.write_zip(tmp_path / "coil-100.zip", [("coil-100/obj1__0.png", F.png()), ("coil-100/obj1__5.png", b"\x89PNG broken")])
    with pytest.raises(DataError, match=r"cannot decode image coil-100/obj1__5.png"):
        prepare_task("coil100", tmp_path / "root", tmp_path, size=16, verify=False)
    assert not (tmp_path / "root" / "coil100").exists()


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "coil-100/../../evil.png"])
def test_archive_members_escaping_the_archive_are_refused(tmp_path: Path, member: str) -> None:
    with zipfile.ZipFile(tmp_path / "coil-100.zip", "w") as archive:
        archive.writestr("coil-100/obj1__0.png", F.png())
        archive.writestr(member, F.png())
    with pytest.raises(DataError, match="unsafe member name"):
        prepare_task("coil100", tmp_path / "root", tmp_path, size=16, verify=False)
    F.write_tar(tmp_path / "uiuc.tar.gz", [("CarData/TrainImages/pos-1.pgm", F.png()), (member, F.png())], "w:gz")
    with pytest.raises(DataError, match="unsafe member name"):
        prepare_task("uiuc_cars", tmp_path / "root", tmp_path, size=16, verify=False)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_truncated_archive_is_reported(tmp_path: Path) -> None:
    F.build("lfw", tmp_path / "src")
    data = (tmp_path / "src" / "lfw.tgz").read_bytes()
    (tmp_path / "src" / "lfw.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="lfw.tgz is truncated or corrupt"):
        prepare_task("lfw", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_corrupt_and_truncated_caches_are_detected(tmp_path: Path) -> None:
    F.build("mnist", tmp_path / "src")
    prepare_task("mnist", tmp_path / "root", tmp_path / "src", size=16, verify=False)
    images = tmp_path / "root" / "mnist" / "images.u8"
    data = bytearray(images.read_bytes())
    data[5] ^= 0xFF
    images.write_bytes(bytes(data))
    status = task_status(tmp_path / "root", "mnist")
    assert status["status"] == "corrupt" and "checksum" in status["reason"]
    with pytest.raises(DataError, match=r"task 'mnist' .* is corrupt: images.u8 does not match its checksum.*--force"):
        load_packed(tmp_path / "root", "mnist")
    images.write_bytes(bytes(data[:-100]))
    assert "truncated" in task_status(tmp_path / "root", "mnist", verify=False)["reason"]
    (tmp_path / "root" / "mnist" / "meta.json").write_text("{broken")
    assert task_status(tmp_path / "root", "mnist")["status"] == "corrupt"
    # --force re-packs it in place
    prepare(["mnist"], tmp_path / "root", source_dir=tmp_path / "src", verify=False, size=16, force=True)
    assert task_status(tmp_path / "root", "mnist")["status"] == "ready"


def test_source_file_digest_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "f").write_bytes(b"nevis" * 300_000)  # several read chunks
    assert file_digest(tmp_path / "f", "md5") == hashlib.md5(b"nevis" * 300_000).hexdigest()
    assert SourceFile("x", md5="ab", sha256="cd").checksum == ("sha256", "cd")


def test_meta_records_rule_deviations_and_sources(tmp_path: Path) -> None:
    F.build("uiuc_cars", tmp_path / "src")
    prepare_task("uiuc_cars", tmp_path / "root", tmp_path / "src", size=16, verify=False)
    meta = json.loads((tmp_path / "root" / "uiuc_cars" / "meta.json").read_text())
    assert meta["split_rule"].startswith("random assignment 56/12/12/20")
    assert any("TestImages" in d for d in meta["deviations"])
    assert meta["sources"] == [{"file": "uiuc.tar.gz", "bytes": (tmp_path / "src" / "uiuc.tar.gz").stat().st_size,
                                "checksum": "not verified (--no-verify)"}]
    assert meta["checksums_verified"] is False
    assert tarfile.is_tarfile(tmp_path / "src" / "uiuc.tar.gz")


def test_gunzipped_idx_and_bytes_keyed_cifar_pickles_are_read(tmp_path: Path) -> None:
    import gzip
    import pickle

    F.build("mnist", tmp_path / "mnist")
    for path in (tmp_path / "mnist").glob("*.gz"):  # a user who already gunzipped the files
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    status = prepare_task("mnist", tmp_path / "root", tmp_path / "mnist", size=16, verify=True)
    assert status["splits"] == {"train": 14, "dev": 3, "dev_test": 3, "test": 7}
    assert {s["checksum"] for s in status["meta"]["sources"]} == {"none published for this form of train-images-idx3-ubyte.gz",
                                                                  "none published for this form of train-labels-idx1-ubyte.gz",
                                                                  "none published for this form of t10k-images-idx3-ubyte.gz",
                                                                  "none published for this form of t10k-labels-idx1-ubyte.gz"}
    members = []
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 5)]:
        batch = {b"data": np.zeros((n, 3072), np.uint8) + 7, b"labels": list(range(n))}  # Python 3 pickles: bytes keys
        members.append((f"cifar-10-batches-py/{name}", pickle.dumps(batch)))
    (tmp_path / "cifar").mkdir()
    F.write_tar(tmp_path / "cifar" / "cifar-10-python.tar.gz", members, "w:gz")
    status = prepare_task("cifar10", tmp_path / "root", tmp_path / "cifar", size=16, verify=False)
    assert status["splits"] == {"train": 14, "dev": 3, "dev_test": 3, "test": 5}
