"""Hostile and damaged inputs to `data prepare` and to the packed cache: nothing runs, nothing is
inflated without bound, and every failure is a one-line DataError naming the file and the fix."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import short_fixtures as F

from nevisbench.errors import DataError
from nevisbench.tasks.cache import task_status
from nevisbench.tasks.prepare import prepare_task

CIFAR10 = ("cifar-10-python.tar.gz", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch")


def _cifar10(folder: Path, replace: dict[str, bytes]) -> None:
    """A CIFAR-10 archive whose members in `replace` hold the given bytes instead of a batch."""
    archive, top, train, test = CIFAR10
    members = []
    for name in [*train, test]:
        batch = {"data": np.zeros((4, 3072), np.uint8), "labels": [1, 2, 3, 4]}
        members.append((f"{top}/{name}", replace.get(name, pickle.dumps(batch, protocol=2))))
    folder.mkdir(parents=True, exist_ok=True)
    F.write_tar(folder / archive, members, "w:gz")


class _WritesMarker:
    """Unpickling this runs `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("verify", [True, False])
def test_a_crafted_cifar_pickle_never_runs(tmp_path: Path, verify: bool) -> None:
    marker = tmp_path / "marker"
    evil = pickle.dumps({"data": _WritesMarker(marker), "labels": [1]}, protocol=2)
    _cifar10(tmp_path / "src", {"data_batch_3": evil})
    expected = (r"cifar10: checksum mismatch, cifar-10-python.tar.gz: md5 [0-9a-f]+, expected c58f3" if verify else
                r"^cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_3 is not a plain CIFAR batch: its pickle asks for "
                r"__builtin__.exec, which could run code; refusing to load it. Re-download the archive from "
                r"https://www.cs.toronto.edu/~kriz/cifar.html$")
    with pytest.raises(DataError, match=expected):
        prepare_task("cifar10", tmp_path / "root", tmp_path / "src", size=16, verify=verify)
    assert not marker.exists()
    assert task_status(tmp_path / "root", "cifar10")["status"] == "missing"


@pytest.mark.parametrize(("payload", "asks_for"), [
    (pickle.dumps({"data": __import__("os").system}), "posix.system"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R.",  # shape (0,): allowed
     None),
])
def test_only_numpy_array_globals_are_admitted(tmp_path: Path, payload: bytes, asks_for: str | None) -> None:
    _cifar10(tmp_path / "src", {"test_batch": payload})
    with pytest.raises(DataError) as error:
        prepare_task("cifar10", tmp_path / "root", tmp_path / "src", size=16, verify=False)
    message = str(error.value)
    assert "\n" not in message and "cifar-10-batches-py/test_batch" in message
    if asks_for:
        assert f"asks for {asks_for}, which could run code" in message
    else:  # an empty array is harmless: refused as a damaged batch, not as code
        assert "holds a ndarray, not a CIFAR batch" in message


def test_an_unbounded_numpy_allocation_in_a_pickle_is_refused(tmp_path: Path) -> None:
    # _reconstruct(ndarray, (10**12,), b'b'): would allocate a terabyte before BUILD checks anything
    huge = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85C\x01b\x87R."
    _cifar10(tmp_path / "src", {"test_batch": huge})
    with pytest.raises(DataError, match=r"test_batch is not a plain CIFAR batch: its pickle asks for numpy "
                                        r"_reconstruct\(ndarray, \(1000000000000,\)\)"):
        prepare_task("cifar10", tmp_path / "root", tmp_path / "src", size=16, verify=False)


@pytest.mark.parametrize(("batch", "message"), [
    ([1, 2, 3], r"holds a list, not a CIFAR batch \(a dict with 'data' and 'labels'\)"),
    ({"data": np.zeros((4, 100), np.uint8), "labels": [1, 2, 3, 4]}, r"'data' is uint8 \(4, 100\), expected uint8 \(N, 3072\)"),
    ({"data": np.zeros((4, 3072), np.float32), "labels": [1, 2, 3, 4]}, r"'data' is float32 \(4, 3072\), expected uint8"),
    ({"data": np.full((4, 3072), 300, np.int64), "labels": [1, 2, 3, 4]}, r"'data' holds values outside 0..255"),
    ({"data": np.zeros((4, 3072), np.uint8), "labels": [1, 2]}, r"'labels' must be 4 integer labels, one per image, got int64 \(2,\)"),
    ({"data": np.zeros((4, 3072), np.uint8), "labels": ["a", "b", "c", "d"]}, r"'labels' must be 4 integer labels"),
    ({"data": np.zeros((4, 3072), np.uint8)}, r"has no 'labels' or 'data' entry"),
])
def test_malformed_cifar_batches_are_one_line(tmp_path: Path, batch: object, message: str) -> None:
    _cifar10(tmp_path / "src", {"data_batch_1": pickle.dumps(batch, protocol=2)})
    with pytest.raises(DataError, match=r"^cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1.*" + message):
        prepare_task("cifar10", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_a_truncated_cifar_pickle_is_one_line(tmp_path: Path) -> None:
    whole = pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [1, 2, 3, 4]}, protocol=2)
    _cifar10(tmp_path / "src", {"data_batch_2": whole[: len(whole) // 2]})
    with pytest.raises(DataError, match=r"^cifar-10-python.tar.gz: cannot read cifar-10-batches-py/data_batch_2 "
                                        r"\(\w+: .*\); re-download the archive from https://www.cs.toronto.edu/~kriz/cifar.html$"):
        prepare_task("cifar10", tmp_path / "root", tmp_path / "src", size=16, verify=False)


# -- a damaged meta.json -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared MNIST fixture task; each test copies it before damaging the copy."""
    base = tmp_path_factory.mktemp("prepared")
    F.build("mnist", base / "src")
    prepare_task("mnist", base / "root", base / "src", size=16, verify=False)
    return base / "root"


def _damaged_copy(prepared: Path, tmp_path: Path, change) -> Path:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(prepared, root)
    meta_path = root / "mnist" / "meta.json"
    change(root / "mnist", json.loads(meta_path.read_text()), meta_path)
    return root


def _write(meta_path: Path, meta: object) -> None:
    meta_path.write_text(json.dumps(meta))


def _flip_bit(folder: Path, meta: dict, path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0x40  # '{' -> ';'
    path.write_bytes(bytes(data))


def _not_utf8(folder: Path, meta: dict, path: Path) -> None:
    path.write_bytes(b"\xff\xfe" + path.read_bytes())


def _labels_out_of_range(folder: Path, meta: dict, path: Path) -> None:
    labels = np.load(folder / "labels.npy")
    labels[3] = 10
    np.save(folder / "labels.npy", labels)


def _split_out_of_range(folder: Path, meta: dict, path: Path) -> None:
    with np.load(folder / "splits.npz") as archive:
        splits = {k: archive[k] for k in archive.files}
    splits["test"][0] = 1000
    np.savez(folder / "splits.npz", **splits)


def _split_missing(folder: Path, meta: dict, path: Path) -> None:
    with np.load(folder / "splits.npz") as archive:
        splits = {k: archive[k] for k in archive.files if k != "dev_test"}
    np.savez(folder / "splits.npz", **splits)


def _pickled_labels(folder: Path, meta: dict, path: Path) -> None:
    np.save(folder / "labels.npy", np.array([object()] * meta["num_examples"]), allow_pickle=True)


DAMAGE = {
    "bit flip": (_flip_bit, r"meta.json is not valid JSON \(Expecting value: line 1 column 1 \(char 0\)\); prepare the task again"),
    "not utf-8": (_not_utf8, r"meta.json is not valid JSON \(.*codec can't decode.*\); prepare the task again"),
    "a list": (lambda f, m, p: _write(p, [m]), r"meta.json holds a JSON list, not an object; prepare the task again"),
    "missing key": (lambda f, m, p: _write(p, {k: v for k, v in m.items() if k != "num_examples"}),
                    r"meta.json has a missing or invalid 'num_examples' \(None\)"),
    "string count": (lambda f, m, p: _write(p, {**m, "num_examples": "27"}), r"invalid 'num_examples' \('27'\)"),
    "bad shape": (lambda f, m, p: _write(p, {**m, "image_shape": [1, 16]}), r"invalid 'image_shape' \(\[1, 16\]\)"),
    "reshaped": (lambda f, m, p: _write(p, {**m, "image_shape": [1, 8, 8], "num_examples": 4 * 27, "labels_shape": [108]}),
                 r"image_shape \[1, 8, 8\] disagrees with its channels 1 and stored_size 16"),
    "reshaped consistently": (lambda f, m, p: _write(p, {**m, "image_shape": [3, 16, 16], "channels": 3}),
                              r"images.u8 has 6912 bytes, expected 20736 \(truncated\?\)"),
    "split sizes": (lambda f, m, p: _write(p, {**m, "splits": {**m["splits"], "test": None}}),
                    r"meta.json's 'splits' must give the size of each of train, dev, dev_test, test"),
    "labels shape": (lambda f, m, p: _write(p, {**m, "labels_shape": [26]}), r"labels_shape \[26\] disagrees with 27 examples"),
    "labels out of range": (_labels_out_of_range, r"labels.npy has label 10, outside 0..9"),
    "split out of range": (_split_out_of_range, r"splits.npz's 'test' indexes outside the 27 examples"),
    "split missing": (_split_missing, r"splits.npz has no 'dev_test' split"),
    "pickled labels": (_pickled_labels, r"labels.npy or splits.npz cannot be read \(Object arrays cannot be loaded"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_meta_is_corrupt_with_a_reason_and_a_run_gets_one_line(prepared_mnist: Path, tmp_path: Path, damage: str) -> None:
    from nevisbench.tasks.cache import load_packed
    from nevisbench.tasks.prepare import status_rows

    change, reason = DAMAGE[damage]
    root = _damaged_copy(prepared_mnist, tmp_path, change)
    for verify in (False, True):  # `data status --quick` and `data status`; the runner loads with verification
        (row,) = status_rows(root, ["mnist"], verify=verify)
        assert row["status"] == "corrupt", (damage, row)
        assert "\n" not in row["reason"] and row["num_examples"] is None and row["bytes"] == 0
        if not (verify and damage in ("labels out of range", "split out of range", "split missing", "pickled labels")):
            assert re.search(reason, row["reason"]), (damage, row["reason"])
    with pytest.raises(DataError, match=r"^task 'mnist' in .* is corrupt: .*Prepare it with: nevisbench data prepare "
                                        r"mnist --root .* --force$") as error:
        load_packed(root, "mnist", verify=False)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_damaged_meta_shows_as_corrupt_in_data_status(prepared_mnist: Path, tmp_path: Path) -> None:
    from conftest import run_cli

    root = _damaged_copy(prepared_mnist, tmp_path, lambda f, m, p: _write(p, [m]))
    done = run_cli("data", "status", "mnist", "usps", "--root", str(root))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"mnist\s+.*corrupt", done.stdout) and "0 of 2 ready" in done.stdout
    rows = json.loads(run_cli("data", "status", "mnist", "--root", str(root), "--json").stdout)
    assert rows[0]["status"] == "corrupt" and rows[0]["reason"].endswith("meta.json holds a JSON list, not an object; "
                                                                          "prepare the task again")


# -- malformed source files and resource exhaustion ----------------------------------------------
def _idx_file(path: Path, header: bytes, body: bytes = b"") -> None:
    import gzip

    path.write_bytes(gzip.compress(header + body))


@pytest.mark.parametrize(
    ("file", "header", "message"),
    [
        (
            "train-labels-idx1-ubyte.gz",
            bytes([0, 0, 8, 0]),
            r"train-labels-idx1-ubyte.gz declares 0 dimensions, expected 1 \(labels: count\)",
        ),
        (
            "train-images-idx3-ubyte.gz",
            bytes([0, 0, 8, 1]) + (20).to_bytes(4, "big"),
            r"train-images-idx3-ubyte.gz declares 1 dimensions, expected 3 \(images: count, rows, columns\)",
        ),
        (
            "train-images-idx3-ubyte.gz",
            bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3,
            r"train-images-idx3-ubyte.gz declares shape \(4294967295, 4294967295, 4294967295\) \(\d+ bytes\), more than the "
            r"256 MiB an idx file of SHORT needs; refusing to read it",
        ),
        (
            "train-images-idx3-ubyte.gz",
            bytes([0, 0, 8, 3]) + (20).to_bytes(4, "big"),
            r"train-images-idx3-ubyte.gz is truncated: its header ends early",
        ),
        ("train-images-idx3-ubyte.gz", bytes([0, 0, 9, 3]), r"train-images-idx3-ubyte.gz is not an idx file of unsigned bytes"),
    ],
)
def test_malformed_idx_headers_are_refused_before_reading(tmp_path: Path, file: str, header: bytes, message: str) -> None:
    F.build("mnist", tmp_path / "src")
    _idx_file(tmp_path / "src" / file, header)
    with pytest.raises(DataError, match="^" + message):
        prepare_task("mnist", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_an_idx_gzip_inflating_past_its_declared_shape_is_cut_off(tmp_path: Path) -> None:
    import zlib

    F.build("mnist", tmp_path / "src")
    # declares 2 images of 28x28 (1568 bytes) but inflates to 200 MB of zeros (a ~200 KB file)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    body = [packer.compress(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28)))]
    zeros = bytes(1 << 20)
    body += [packer.compress(zeros) for _ in range(200)] + [packer.flush()]
    (tmp_path / "src" / "t10k-images-idx3-ubyte.gz").write_bytes(b"".join(body))
    with pytest.raises(DataError, match=r"^t10k-images-idx3-ubyte.gz holds more than the 1568 bytes it declares; refusing to read on"):
        prepare_task("mnist", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_archive_members_declaring_too_many_bytes_are_refused_before_inflating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nevisbench.tasks import archives

    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 2000)  # stands in for 256 MiB: the check reads the limit
    F.write_zip(tmp_path / "coil-100.zip", [("coil-100/obj1__0.png", F.png()), ("coil-100/obj1__5.png", bytes(5000))])
    with pytest.raises(
        DataError,
        match=r"^member coil-100/obj1__5.png of coil-100.zip declares 5000 bytes, more than the 0 MiB "
        r"any SHORT file needs; refusing to inflate it",
    ):
        prepare_task("coil100", tmp_path / "root", tmp_path, size=16, verify=False)
    F.write_tar(tmp_path / "uiuc.tar.gz", [("CarData/TrainImages/pos-1.pgm", bytes(5000))], "w:gz")
    with pytest.raises(DataError, match=r"^member CarData/TrainImages/pos-1.pgm of uiuc.tar.gz declares 5000 bytes"):
        prepare_task("uiuc_cars", tmp_path / "root", tmp_path, size=16, verify=False)


def test_decompression_bombs_and_empty_images_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from nevisbench.tasks import archives
    from nevisbench.tasks.prepare import to_stored

    F.write_zip(tmp_path / "coil-100.zip", [("coil-100/obj1__0.png", F.png(10, 12))])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow's own guard: 120 pixels is over twice 50
    with pytest.raises(
        DataError,
        match=r"^coil100: coil-100.zip: image coil-100/obj1__0.png is a decompression bomb \(Image size \(120 pixels\) "
        r"exceeds limit of 100 pixels.*\); refusing to decode it$",
    ):
        prepare_task("coil100", tmp_path / "root", tmp_path, size=16, verify=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(archives, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(
        DataError,
        match=r"^coil100: coil-100.zip: image coil-100/obj1__0.png declares 12x10 pixels, more than 100 "
        r"\(a decompression bomb\?\); refusing to decode it$",
    ):
        prepare_task("coil100", tmp_path / "root", tmp_path, size=16, verify=False)
    with pytest.raises(DataError, match=r"^image pacs\[3\] is empty \(0x0 pixels\)$"):
        to_stored(np.zeros((0, 0, 3), np.uint8), 16, 3, "pacs[3]")
    with pytest.raises(DataError, match=r"^image x is float64 \(4, 4\), expected uint8"):
        to_stored(np.zeros((4, 4)), 16, 1, "x")


def test_a_tiny_brodatz_texture_is_one_line(tmp_path: Path) -> None:
    F.build("brodatz", tmp_path / "src")
    (tmp_path / "src" / "D7.gif").write_bytes(F.encode(F.pixels(2, 2, 1), "GIF"))
    with pytest.raises(DataError, match=r"^brodatz: D7.gif is 2x2 pixels, too small to cut into 3x3 tiles$"):
        prepare_task("brodatz", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def test_a_damaged_table_names_its_file(tmp_path: Path) -> None:
    F.build("fgvc_aircraft_family", tmp_path / "src")
    archive = tmp_path / "src" / "fgvc-aircraft-2013b.tar.gz"
    members = [
        ("fgvc-aircraft-2013b/data/families.txt", b"A300\n"),
        ("fgvc-aircraft-2013b/data/images_family_trainval.txt", b"1000000 Boeing 999\n"),  # a family not listed
        ("fgvc-aircraft-2013b/data/images_family_test.txt", b""),
    ]
    F.write_tar(archive, members, "w:gz")
    with pytest.raises(
        DataError,
        match=r"^fgvc_aircraft_family: fgvc-aircraft-2013b.tar.gz is damaged or not the publisher's "
        r"file \(KeyError: 'Boeing 999'\); re-download it$",
    ):
        prepare_task("fgvc_aircraft_family", tmp_path / "root", tmp_path / "src", size=16, verify=False)


def _worker_dies(key: str, *args: object) -> dict:
    import os

    os._exit(3)  # as a worker killed for memory would


@pytest.mark.slow
def test_a_pool_failure_is_one_line_per_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from nevisbench.tasks import prepare as prepare_module

    for key in ("mnist", "usps"):
        F.build(key, tmp_path / "src" / key)
    monkeypatch.setattr(prepare_module, "_worker", _worker_dies)  # spawned workers find it by module and name
    output = io.StringIO()
    with pytest.raises(DataError, match=r"^2 of 2 task\(s\) failed: mnist, usps; the other tasks are kept in"):
        prepare_module.prepare(
            ["mnist", "usps"],
            tmp_path / "root",
            source_dir=tmp_path / "src",
            verify=False,
            size=16,
            jobs=2,
            console=Console(file=output, width=400),
        )
    failures = [line for line in output.getvalue().splitlines() if line.startswith("failed")]
    assert len(failures) == 2
    for line in failures:
        assert re.fullmatch(
            r"failed (mnist|usps): its worker process failed \(BrokenProcessPool: .*\); run it again with "
            r"--jobs 1 to see why",
            line,
        ), line
