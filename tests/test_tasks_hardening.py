"""Hostile and damaged inputs to `data prepare` and to the packed cache: nothing runs, nothing is
inflated without bound, and every failure is a one-line DataError naming the file and the fix."""

from __future__ import annotations

import io
import pickle
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
