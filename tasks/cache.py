"""The packed task cache the runner reads: one folder per task under `data.root`.

    <root>/<key>/images.u8    uint8 (N, C, S, S), raw, memory-mapped at load
    <root>/<key>/labels.npy   int64 (N,) class ids, or uint8 (N, num_classes) multi-hot
    <root>/<key>/splits.npz   int64 indices per split: train, dev, dev_test, test
    <root>/<key>/meta.json    counts, shape, sha256 of the three files, sources; written last

A task is written into `<root>/.partial/<key>-<pid>/` and renamed into place in one step, so a
crashed or interrupted preparation leaves either the old task or none, never half of one; the
next `prepare` simply redoes that task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nevisbench.errors import DataError
from nevisbench.tasks.archives import file_digest
from nevisbench.tasks.splits import SPLITS

__all__ = ["FORMAT_VERSION", "CacheWriter", "PackedTask", "task_status", "load_packed", "STATUS_READY"]

FORMAT_VERSION = 1
FILES = ("images.u8", "labels.npy", "splits.npz")
STATUS_READY, STATUS_MISSING, STATUS_CORRUPT = "ready", "missing", "corrupt"


class CacheWriter:
    """Streams one task's images to disk as they are decoded; `finish` writes labels, splits and
    metadata and publishes the folder atomically."""

    def __init__(self, root: Path, key: str, *, size: int, channels: int) -> None:
        self.root, self.key, self.size, self.channels = Path(root), key, size, channels
        self.tmp = self.root / ".partial" / f"{key}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._images = open(self.tmp / "images.u8", "wb")
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, image: np.ndarray) -> None:
        expected = (self.channels, self.size, self.size)
        if image.shape != expected or image.dtype != np.uint8:
            raise ValueError(f"image of {image.dtype} {image.shape}, expected uint8 {expected}")
        data = np.ascontiguousarray(image).tobytes()
        self._images.write(data)
        self._hash.update(data)
        self.count += 1

    def abort(self) -> None:
        self._images.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self, labels: np.ndarray, splits: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        self._images.flush()
        os.fsync(self._images.fileno())
        self._images.close()
        if len(labels) != self.count:
            raise DataError(f"{self.key}: {self.count} images but {len(labels)} labels")
        for name in SPLITS:
            index = splits.get(name)
            if index is None or len(index) == 0:
                raise DataError(f"{self.key}: split '{name}' is empty ({self.count} examples in all); "
                                "the source files are incomplete")
            if index.min() < 0 or index.max() >= self.count:
                raise DataError(f"{self.key}: split '{name}' indexes past the {self.count} examples")
        np.save(self.tmp / "labels.npy", labels)
        np.savez(self.tmp / "splits.npz", allow_pickle=False, **{k: np.asarray(splits[k], dtype=np.int64) for k in SPLITS})
        record = {
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "num_examples": self.count,
            "image_shape": [self.channels, self.size, self.size],
            "labels_shape": list(labels.shape),
            "splits": {k: int(len(splits[k])) for k in SPLITS},
            "sha256": {"images.u8": self._hash.hexdigest(), "labels.npy": file_digest(self.tmp / "labels.npy"),
                       "splits.npz": file_digest(self.tmp / "splits.npz")},
            "bytes": sum((self.tmp / f).stat().st_size for f in FILES),
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **meta,
        }
        text = json.dumps(record, indent=2)
        with open(self.tmp / "meta.json", "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.root / self.key
        if final.exists():  # an old or corrupt copy: move it aside first, then publish, then delete
            old = self.root / ".partial" / f"{self.key}-old-{os.getpid()}"
            os.replace(final, old)
            os.replace(self.tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, final)
        return final


def read_meta(folder: Path) -> dict[str, Any]:
    """A task's meta.json as a dict; unreadable, not JSON or not an object is a DataError."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is not valid JSON ({_one_line(exc)}); prepare the task again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds a JSON {type(meta).__name__}, not an object; prepare the task again")
    return meta


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def task_status(root: Path, key: str, *, verify: bool = True) -> dict[str, Any]:
    """{'key', 'status': ready|missing|corrupt, 'reason', 'bytes', 'num_examples', 'splits', ...}.
    `verify` re-hashes the files (what `data status` does); without it only the metadata, the
    file sizes, the labels and the split indices are checked. A corrupt task's row carries only
    the reason: nothing from a damaged meta.json is passed on."""
    folder = Path(root) / key
    row: dict[str, Any] = {"key": key, "status": STATUS_MISSING, "reason": None, "bytes": 0, "num_examples": None, "splits": None}
    if not (folder / "meta.json").exists():
        row["reason"] = "not prepared" if not folder.exists() else "incomplete (no meta.json)"
        return row
    try:
        meta = read_meta(folder)
        problem = _meta_problem(meta) or _problem(folder, meta, verify=verify)
    except DataError as exc:
        problem = str(exc)
    if problem:
        row.update(status=STATUS_CORRUPT, reason=problem)
        return row
    row.update(status=STATUS_READY, bytes=meta.get("bytes", 0), num_examples=meta["num_examples"], splits=meta["splits"],
               num_classes=meta.get("num_classes"), classes_present=meta.get("classes_present"),
               image_shape=meta["image_shape"], checksums_verified=meta.get("checksums_verified"))
    return row


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with meta.json's own fields, in words; None when they are consistent."""
    if meta.get("format_version") != FORMAT_VERSION:
        return f"cache format {meta.get('format_version')!r}, this nevisbench reads {FORMAT_VERSION}; prepare it again"
    for field, ok in (("num_examples", _is_count), ("num_classes", lambda v: _is_count(v) and v > 0),
                      ("multi_label", lambda v: isinstance(v, bool)), ("bytes", _is_count)):
        if not ok(meta.get(field)):
            return f"meta.json has a missing or invalid '{field}' ({meta.get(field)!r})"
    shape = meta.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_count(v) and v > 0 for v in shape)
            and shape[0] in (1, 3) and shape[1] == shape[2]):
        return f"meta.json has an invalid 'image_shape' ({shape!r}), expected [1 or 3, S, S]"
    if (meta.get("channels"), meta.get("stored_size")) != (shape[0], shape[1]):
        return (f"meta.json's image_shape {shape} disagrees with its channels {meta.get('channels')!r} and "
                f"stored_size {meta.get('stored_size')!r}")
    splits, hashes = meta.get("splits"), meta.get("sha256")
    if not isinstance(splits, dict) or any(not _is_count(splits.get(k)) for k in SPLITS):
        return f"meta.json's 'splits' must give the size of each of {', '.join(SPLITS)} (got {splits!r})"
    if not isinstance(hashes, dict) or any(not isinstance(hashes.get(name), str) for name in FILES):
        return f"meta.json's 'sha256' must name a checksum for each of {', '.join(FILES)}"
    n, classes = meta["num_examples"], meta["num_classes"]
    expected = [n, classes] if meta["multi_label"] else [n]
    if meta.get("labels_shape") != expected:
        return f"meta.json's labels_shape {meta.get('labels_shape')!r} disagrees with {n} examples (expected {expected})"
    return None


def _problem(folder: Path, meta: dict[str, Any], *, verify: bool) -> str | None:
    """What is wrong with the task's files, given a consistent meta.json; None when ready."""
    n = meta["num_examples"]
    c, s, _ = meta["image_shape"]
    for name in FILES:
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
    if (folder / "images.u8").stat().st_size != n * c * s * s:
        return f"images.u8 has {(folder / 'images.u8').stat().st_size} bytes, expected {n * c * s * s} (truncated?)"
    if verify:
        for name in FILES:
            if file_digest(folder / name) != meta["sha256"][name]:
                return f"{name} does not match its checksum in meta.json"
    try:
        labels, splits = _read_labels_and_splits(folder)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"labels.npy or splits.npz cannot be read ({_one_line(exc)})"
    return _labels_problem(labels, meta) or _splits_problem(splits, meta)


def _read_labels_and_splits(folder: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = np.load(folder / "labels.npy", allow_pickle=False)
    with np.load(folder / "splits.npz", allow_pickle=False) as archive:
        splits = {k: archive[k] for k in SPLITS if k in archive.files}
    return labels, splits


def _labels_problem(labels: np.ndarray, meta: dict[str, Any]) -> str | None:
    n, classes = meta["num_examples"], meta["num_classes"]
    expected = (n, classes) if meta["multi_label"] else (n,)
    if labels.shape != expected or labels.dtype.kind not in "ui":
        return f"labels.npy holds {labels.dtype} {labels.shape}, expected integer labels of shape {expected}"
    if labels.size == 0:
        return None
    low, high = int(labels.min()), int(labels.max())
    top = 1 if meta["multi_label"] else classes - 1
    if low < 0 or high > top:
        return f"labels.npy has label {high if high > top else low}, outside 0..{top}"
    return None


def _splits_problem(splits: dict[str, np.ndarray], meta: dict[str, Any]) -> str | None:
    n = meta["num_examples"]
    for name in SPLITS:
        if name not in splits:
            return f"splits.npz has no '{name}' split"
        index = splits[name]
        if index.ndim != 1 or index.dtype.kind not in "ui" or len(index) != meta["splits"][name]:
            return (f"splits.npz's '{name}' is {index.dtype} {index.shape}, expected {meta['splits'][name]} "
                    "integer indices as meta.json says")
        if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
            return f"splits.npz's '{name}' indexes outside the {n} examples"
    return None


class PackedTask:
    """A prepared task: images memory-mapped, labels and split indices in memory."""

    def __init__(self, root: Path, key: str, *, verify: bool = True) -> None:
        folder = Path(root) / key
        status = task_status(root, key, verify=verify)
        if status["status"] != STATUS_READY:
            raise DataError(f"task '{key}' in {root} is {status['status']}: {status['reason']}. "
                            f"Prepare it with: nevisbench data prepare {key} --root {root} --force")
        try:  # checked by task_status above; a file changed since then is reported the same way
            self.meta = read_meta(folder)
            self.images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r",
                                    shape=(self.meta["num_examples"], *self.meta["image_shape"]))
            self.labels, self.splits = _read_labels_and_splits(folder)
            problem = _meta_problem(self.meta) or _labels_problem(self.labels, self.meta) or _splits_problem(self.splits, self.meta)
        except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            problem = _one_line(exc)
        if problem:
            raise DataError(f"task '{key}' in {root} changed while loading: {problem}. "
                            f"Prepare it with: nevisbench data prepare {key} --root {root} --force")

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        index = self.splits[name]
        return np.asarray(self.images[index]), self.labels[index]


def load_packed(root: Path, key: str, *, verify: bool = True) -> PackedTask:
    return PackedTask(root, key, verify=verify)

