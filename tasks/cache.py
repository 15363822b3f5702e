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
        np.savez(self.tmp / "splits.npz", **{k: np.asarray(splits[k], dtype=np.int64) for k in SPLITS})
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
    try:
        return json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder / 'meta.json'} is not valid JSON ({exc}); prepare the task again") from None


def task_status(root: Path, key: str, *, verify: bool = True) -> dict[str, Any]:
    """{'key', 'status': ready|missing|corrupt, 'reason', 'bytes', 'num_examples', 'splits'}.
    `verify` re-hashes the files (what `data status` does); without it only sizes are checked."""
    folder = Path(root) / key
    row: dict[str, Any] = {"key": key, "status": STATUS_MISSING, "reason": None, "bytes": 0, "num_examples": None, "splits": None}
    if not (folder / "meta.json").exists():
        row["reason"] = "not prepared" if not folder.exists() else "incomplete (no meta.json)"
        return row
    try:
        meta = read_meta(folder)
        row.update(bytes=meta.get("bytes", 0), num_examples=meta.get("num_examples"), splits=meta.get("splits"),
                   num_classes=meta.get("num_classes"), classes_present=meta.get("classes_present"),
                   image_shape=meta.get("image_shape"), checksums_verified=meta.get("checksums_verified"))
        problem = _problem(folder, meta, verify=verify)
    except DataError as exc:
        problem = str(exc)
    if problem:
        row.update(status=STATUS_CORRUPT, reason=problem)
    else:
        row["status"] = STATUS_READY
    return row


def _problem(folder: Path, meta: dict[str, Any], *, verify: bool) -> str | None:
    if meta.get("format_version") != FORMAT_VERSION:
        return f"cache format {meta.get('format_version')}, this nevisbench reads {FORMAT_VERSION}; prepare it again"
    n = int(meta["num_examples"])
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
    return None


class PackedTask:
    """A prepared task: images memory-mapped, labels and split indices in memory."""

    def __init__(self, root: Path, key: str, *, verify: bool = True) -> None:
        folder = Path(root) / key
        status = task_status(root, key, verify=verify)
        if status["status"] != STATUS_READY:
            raise DataError(f"task '{key}' in {root} is {status['status']}: {status['reason']}. "
                            f"Prepare it with: nevisbench data prepare {key} --root {root} --force")
        self.meta = read_meta(folder)
        self.images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(self.meta["num_examples"], *self.meta["image_shape"]))
        self.labels = np.load(folder / "labels.npy")
        with np.load(folder / "splits.npz") as splits:
            self.splits = {k: splits[k] for k in SPLITS}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        index = self.splits[name]
        return np.asarray(self.images[index]), self.labels[index]


def load_packed(root: Path, key: str, *, verify: bool = True) -> PackedTask:
    return PackedTask(root, key, verify=verify)

