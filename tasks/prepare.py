"""`nevisbench data prepare` / `data status`: publishers' files -> the packed task cache.

Per task: find its files (`--source-dir`) or fetch them (`--download`, resumable, verified),
verify the catalogue's checksums, read every example in the order the Nevis pipeline visits
them, store each as a uint8 square of `size` pixels (central square crop of side min(h, w), then
an antialiased bilinear resize: the Nevis evaluation preprocessing), apply the dataset's split
rule, and publish the task folder atomically (see `nevisbench.tasks.cache`). Finished tasks are skipped
on the next call, so an interrupted preparation resumes task by task. Several tasks are packed in
parallel processes.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nevisbench.errors import DataError, choice_error
from nevisbench.tasks.archives import SourceFile, decode_image, fetch, is_os_metadata, verify_file
from nevisbench.tasks.cache import STATUS_READY, CacheWriter, task_status
from nevisbench.tasks.datasets import Dataset, dataset_entry, dataset_keys, get_dataset
from nevisbench.tasks.splits import SPLITS

__all__ = ["expand_targets", "prepare", "prepare_task", "status_rows", "status_table", "prepare_table",
           "to_stored", "split_in_visit_order", "DEFAULT_SIZE"]

DEFAULT_SIZE = 64  # the Nevis protocol's image size; 64x64x3 bytes = 12 KiB per image
SPLITS_COLUMN = "/".join(SPLITS)  # table column: sizes of the four splits


def expand_targets(targets: list[str]) -> list[str]:
    """Dataset keys from task keys and stream names (`short`, `short_objects`, ...), in order, once each."""
    from nevisbench.tasks import get_stream
    from nevisbench.tasks.short import STREAM_NAMES

    known = dataset_keys()
    streams = {name: [t.key for t in get_stream(name).tasks] for name in STREAM_NAMES}
    keys: list[str] = []
    for target in targets:
        if target in streams:
            found = streams[target]
        elif target in known:
            found = [target]
        else:
            raise choice_error("task or stream", target, [*streams, *known])
        keys += [k for k in found if k not in keys]
    return keys


def to_stored(image: Any, size: int, channels: int, name: str) -> np.ndarray:
    """Any decoded or encoded image -> uint8 (channels, size, size): central square crop, resize."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        image = decode_image(bytes(image), name, draft=size)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise DataError(f"image {name} is {image.dtype} {image.shape}, expected uint8 (H, W) or (H, W, 1|3|4)")
        image = Image.fromarray(np.ascontiguousarray(image if image.ndim == 2 or image.shape[2] != 1 else image[..., 0]))
    mode = "L" if channels == 1 else "RGB"
    w, h = image.size
    if w == 0 or h == 0:
        raise DataError(f"image {name} is empty ({w}x{h} pixels)")
    if image.mode != mode:
        image = image.convert(mode)
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


# -- sources ------------------------------------------------------------------------------------
def _locate(dataset: Dataset, folders: tuple[Path, ...]) -> tuple[dict[SourceFile, list[Path]], list[str]]:
    """Each source file's path(s), looked up in the task's folder first, then in the fallbacks
    (Office-Caltech finds Caltech-256's tar in the caltech256 folder); and what is missing."""
    found: dict[SourceFile, list[Path]] = {}
    missing = []
    for f in dataset.files:
        for folder in folders:
            if not folder.is_dir():
                continue
            if f.pattern:  # a `._x.hdf5` AppleDouble stub beside `x.hdf5` is not one of the files
                paths = sorted(p for p in folder.iterdir() if p.is_file() and p.match(f.pattern) and not is_os_metadata(p.name))
            else:
                paths = [folder / n for n in (f.name, *f.alternatives) if (folder / n).is_file()][:1]
            if paths:
                found[f] = paths
                break
        else:
            missing.append(f.pattern or f.name)
    return found, missing


def _verify(dataset: Dataset, found: dict[SourceFile, list[Path]], verify: bool) -> list[dict[str, Any]]:
    """Check every file against the catalogue; a mismatch stops this task with one line."""
    records = []
    for f, paths in found.items():
        for path in paths:
            alternative = not f.pattern and path.name != f.name
            problem = verify_file(path, f) if verify and not alternative else None
            if problem:
                raise DataError(f"{dataset.key}: checksum mismatch, {problem}. Re-download it, or pass --no-verify "
                                "if it is a re-packed mirror you trust")
            state = ("verified" if (f.checksum or f.md5_any) else "none published") if verify else "not verified (--no-verify)"
            if alternative:
                state = f"none published for this form of {f.name}"
            records.append({"file": path.name, "bytes": path.stat().st_size, "checksum": state})
    return records


def _resolve_folder(key: str, source_dir: Path, single: bool) -> Path:
    if (source_dir / key).is_dir():
        return source_dir / key
    if single:
        return source_dir
    raise DataError(f"{source_dir} has no sub-folder '{key}'; with several tasks, --source-dir holds one folder per task key")


# -- one task -----------------------------------------------------------------------------------
def prepare_task(key: str, root: Path, folder: Path, *, size: int = DEFAULT_SIZE, verify: bool = True,
                 progress: Callable[[int, int | None], None] | None = None, extra_folders: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Pack one dataset from the files in `folder` into `root/<key>`; returns its metadata."""
    from nevisbench.tasks.readers.common import SourceFolder

    dataset = get_dataset(key)
    found, missing = _locate(dataset, (folder, *extra_folders))
    if missing:
        urls = {f.name: f.url for f in dataset.files}
        listed = ", ".join(f"{m} ({urls[m]})" if urls.get(m) else m for m in missing)
        raise DataError(f"{key}: missing from {folder}: {listed}. Download them (or use --download) and pass --source-dir")
    sources = _verify(dataset, found, verify)
    num_classes, multi_label = dataset.num_classes, dataset.multi_label
    total = _expected_total(dataset_entry(key))
    writer = CacheWriter(root, key, size=size, channels=dataset.channels)
    labels: list[Any] = []
    groups: list[str] = []
    orders: list[Any] = []
    source = SourceFolder(folder, key, {f.pattern or f.name: p for f, p in found.items()})
    try:
        for example in _examples(dataset, source):
            try:
                writer.add(to_stored(example.image, size, dataset.channels, example.name))
            except DataError as exc:  # name the source file the bad image came from
                raise DataError(f"{key}: {source.opened.name if source.opened else folder}: {exc}") from None
            label = example.label
            ids = label if multi_label else (label,)
            if any(not 0 <= int(i) < num_classes for i in ids):
                raise DataError(f"{key}: {example.name} has label {label}, outside 0..{num_classes - 1}")
            labels.append(label)
            groups.append(example.group)
            orders.append(example.order)
            if progress and len(labels) % 64 == 0:
                progress(len(labels), total)
        if not labels:
            raise DataError(f"{key}: no images found in the files in {folder}; are they the right archives?")
        if multi_label:
            label_array = np.zeros((len(labels), num_classes), dtype=np.uint8)
            for i, ids in enumerate(labels):
                label_array[i, list(ids)] = 1
        else:
            label_array = np.asarray(labels, dtype=np.int64)
        splits = split_in_visit_order(dataset, np.asarray(groups), orders)
        assigned = np.concatenate([splits[s] for s in splits])
        if len(np.unique(assigned)) != len(assigned):
            raise DataError(f"{key}: the split rule put an example in two splits (a bug; please report it)")
        present = int((label_array.sum(0) > 0).sum()) if multi_label else len(np.unique(label_array))
        meta = {
            "dataset": key, "num_classes": num_classes, "classes_present": present, "multi_label": multi_label,
            "stored_size": size, "channels": dataset.channels, "split_rule": dataset.rule,
            "deviations": list(dataset.deviations), "sources": sources, "checksums_verified": verify,
            "label_names": list(dataset.label_names) if dataset.label_names else None,
        }
        if progress:
            progress(len(labels), len(labels))
        writer.finish(label_array, splits, meta)
    except BaseException:
        writer.abort()
        raise
    return task_status(root, key, verify=False) | {"meta": meta}


def split_in_visit_order(dataset: Dataset, groups: np.ndarray, orders: list[Any]) -> dict[str, np.ndarray]:
    """The dataset's split rule applied to its examples in the order the Nevis pipeline visits them
    (`Example.order`, when the reader streamed them in another), as indices of the stored order."""
    if all(order is None for order in orders):
        return dataset.split(groups)
    if any(order is None for order in orders):
        raise DataError(f"{dataset.key}: its reader gave some examples a visiting order and not others (a bug; please report it)")
    visit = np.asarray(sorted(range(len(orders)), key=orders.__getitem__), dtype=np.int64)  # stable: ties keep reading order
    return {split: np.sort(visit[indices]) for split, indices in dataset.split(groups[visit]).items()}


# What a reader's parsing raises on damaged files it could not foresee (a broken table line, text
# that is not UTF-8, a missing key): reported as the file being damaged, never as a traceback.
_DAMAGED_FILE_ERRORS = (ValueError, KeyError, IndexError, EOFError, OSError, OverflowError, struct.error, zlib.error,
                        tarfile.TarError, zipfile.BadZipFile)


def _examples(dataset: Dataset, source: Any) -> Iterator[Any]:
    """The reader's examples; a damaged file stops them with one line naming the file."""
    try:
        yield from dataset.read(source)
    except _DAMAGED_FILE_ERRORS as exc:
        where = source.opened.name if source.opened else f"the files in {source.folder}"
        raise DataError(f"{dataset.key}: {where} is damaged or not the publisher's file ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}); re-download it") from None


def _expected_total(entry: dict[str, Any]) -> int | None:
    sizes = entry.get("splits", {}).get("sizes")
    if isinstance(sizes, dict):
        return sum(int(sizes[k]) for k in SPLITS if isinstance(sizes.get(k), int))
    return None


def _worker(key: str, root: str, folder: str, size: int, verify: bool, extra: tuple[str, ...], queue: Any) -> dict[str, Any]:
    def report(done: int, total: int | None) -> None:
        queue.put((key, done, total))

    return prepare_task(key, Path(root), Path(folder), size=size, verify=verify, progress=report,
                        extra_folders=tuple(Path(e) for e in extra))


# -- many tasks ---------------------------------------------------------------------------------
def prepare(targets: list[str], root: Path, *, source_dir: Path | None = None, download: bool = False, verify: bool = True,
            size: int = DEFAULT_SIZE, jobs: int | None = None, force: bool = False, mirror: str | None = None,
            console: Console | None = None) -> list[dict[str, Any]]:
    """Prepare every task in `targets`; returns one row per task. Raises DataError after the
    others are done if any task failed (finished tasks are kept)."""
    console = console or Console()
    if size < 16:
        raise DataError(f"Invalid --size {size}: it must be >= 16 pixels")
    if source_dir is None and not download:
        raise DataError("say where the files come from: --source-dir DIR (files already downloaded) or --download")
    if source_dir is not None and not Path(source_dir).is_dir():
        raise DataError(f"--source-dir {source_dir} is not a folder")
    keys = expand_targets(targets)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if not verify:
        console.print("[bold yellow]warning:[/] --no-verify: source checksums are NOT checked (fine for re-packed "
                      "mirrors and test fixtures; the metadata records it).")
    rows: dict[str, dict[str, Any]] = {}
    todo: dict[str, Path] = {}
    for key in keys:
        if not force and task_status(root, key, verify=False)["status"] == STATUS_READY:
            rows[key] = {"key": key, "result": "already prepared", "seconds": 0.0}
            continue
        for stale in (root / ".partial").glob(f"{key}-*"):  # left by a killed preparation
            shutil.rmtree(stale, ignore_errors=True)
        try:
            if download:
                todo[key] = _download(key, root / "downloads" / key, verify=verify, mirror=mirror, console=console)
            else:
                todo[key] = _resolve_folder(key, Path(source_dir or "."), single=len(keys) == 1)
        except DataError as exc:
            rows[key] = {"key": key, "result": "failed", "error": str(exc), "seconds": 0.0}
    extra = _sibling_folders(source_dir, download, root)
    if todo:
        rows.update(_pack_all(todo, root, size=size, verify=verify, jobs=jobs, extra=extra, console=console))
    ordered = [rows[k] for k in keys]
    failed = [r for r in ordered if r["result"] == "failed"]
    _print_rows(ordered, console)
    if failed:
        for row in failed:
            error = row["error"] if row["error"].startswith(f"{row['key']}:") else f"{row['key']}: {row['error']}"
            console.print(f"[bold red]failed[/] {error}", highlight=False)
        raise DataError(f"{len(failed)} of {len(keys)} task(s) failed: {', '.join(r['key'] for r in failed)}; "
                        f"the other tasks are kept in {root}")
    return ordered


def _sibling_folders(source_dir: Path | None, download: bool, root: Path) -> tuple[Path, ...]:
    base = root / "downloads" if download else Path(source_dir) if source_dir else None
    if base is None or not base.is_dir():
        return ()
    return tuple(p for p in sorted(base.iterdir()) if p.is_dir()) + (base,)


def _download(key: str, folder: Path, *, verify: bool, mirror: str | None, console: Console) -> Path:
    dataset = get_dataset(key)
    with Progress(TextColumn("[cyan]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        for f in dataset.files:
            if f.pattern:  # files without known names (PACS): every catalogue URL, named by the server
                raise DataError(f"{key}: its files have no published names; download them by hand and pass --source-dir")
            url = f"{mirror.rstrip('/')}/{key}/{f.name}" if mirror else f.url
            task = bar.add_task(f"{key}: {f.name}", total=None)
            fetch(f, folder, url=url, verify=verify, progress=lambda done, total, t=task: bar.update(t, completed=done, total=total))
    return folder


def _pack_all(todo: dict[str, Path], root: Path, *, size: int, verify: bool, jobs: int | None, extra: tuple[Path, ...],
              console: Console) -> dict[str, dict[str, Any]]:
    jobs = max(1, min(jobs or (os.cpu_count() or 1), len(todo)))
    rows: dict[str, dict[str, Any]] = {}
    columns = (TextColumn("[cyan]{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        bars = {key: bar.add_task(key, total=None) for key in todo}
        starts = {}
        if jobs == 1:
            for key, folder in todo.items():
                starts[key] = time.perf_counter()
                try:
                    result = prepare_task(key, root, folder, size=size, verify=verify, extra_folders=extra,
                                          progress=functools.partial(_advance, bar, bars[key]))
                    rows[key] = _ok_row(key, result, starts[key])
                except DataError as exc:
                    rows[key] = {"key": key, "result": "failed", "error": str(exc), "seconds": time.perf_counter() - starts[key]}
            return rows
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
            queue = manager.Queue()
            futures = {}
            for key, folder in todo.items():
                starts[key] = time.perf_counter()
                futures[pool.submit(_worker, key, str(root), str(folder), size, verify, tuple(map(str, extra)), queue)] = key
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    key, completed, total = queue.get()
                    bar.update(bars[key], completed=completed, total=total)
                for future in done:
                    key = futures[future]
                    try:
                        rows[key] = _ok_row(key, future.result(), starts[key])
                        bar.update(bars[key], completed=rows[key]["num_examples"], total=rows[key]["num_examples"])
                    except DataError as exc:
                        rows[key] = {"key": key, "result": "failed", "error": str(exc), "seconds": time.perf_counter() - starts[key]}
                    except Exception as exc:  # a worker that died (killed, out of memory) or failed unexpectedly
                        error = f"its worker process failed ({type(exc).__name__}: {' '.join(str(exc).split())}); " \
                                "run it again with --jobs 1 to see why"
                        rows[key] = {"key": key, "result": "failed", "error": error, "seconds": time.perf_counter() - starts[key]}
    return rows


def _advance(bar: Progress, bar_id: Any, done: int, total: int | None) -> None:
    bar.update(bar_id, completed=done, total=total)


def _ok_row(key: str, status: dict[str, Any], start: float) -> dict[str, Any]:
    return {"key": key, "result": "prepared", "num_examples": status["num_examples"], "splits": status["splits"],
            "bytes": status["bytes"], "classes_present": status["meta"]["classes_present"],
            "num_classes": status["meta"]["num_classes"], "seconds": time.perf_counter() - start}


def prepare_table(rows: list[dict[str, Any]]) -> Any:
    """The `data prepare` summary: one row per task."""
    from rich.table import Table

    table = Table(title="data prepare", title_justify="left")
    for column in ("task", "result", "examples", "classes", SPLITS_COLUMN, "seconds"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["key"], row["result"], str(row.get("num_examples", "")), _classes(row),
                      _split_sizes(row.get("splits")), f"{row['seconds']:.1f}")
    return table


def _print_rows(rows: list[dict[str, Any]], console: Console) -> None:
    console.print(prepare_table(rows))


def _classes(row: dict[str, Any]) -> str:
    return f"{row['classes_present']}/{row['num_classes']}" if row.get("num_classes") else ""


def _split_sizes(splits: Any) -> str:
    """'14/3/3/7' from a {split: size} dict; '' when unknown or not a complete dict."""
    if not isinstance(splits, dict) or not all(isinstance(splits.get(k), int) for k in SPLITS):
        return ""
    return "/".join(str(splits[k]) for k in SPLITS)


def status_table(rows: list[dict[str, Any]], root: Path) -> Any:
    """The `data status` table: one row per task (ready / missing / corrupt, with the reason)."""
    from rich.table import Table

    table = Table(title=f"SHORT task data in {root}", title_justify="left")
    for column in ("task", "status", "examples", "classes", SPLITS_COLUMN, "MiB", "note"):
        table.add_column(column)
    colour = {"ready": "green", "missing": "yellow", "corrupt": "red"}
    for row in rows:
        note = row["reason"] or ("sources not verified (--no-verify)" if row.get("checksums_verified") is False else "")
        size = row["bytes"] if isinstance(row.get("bytes"), (int, float)) else 0
        table.add_row(row["key"], f"[{colour[row['status']]}]{row['status']}[/]", str(row["num_examples"] or ""),
                      _classes(row), _split_sizes(row.get("splits")), f"{size / 2**20:.1f}" if size else "", note)
    return table


def status_rows(root: Path, targets: list[str] | None = None, *, verify: bool = True) -> list[dict[str, Any]]:
    keys = expand_targets(targets or ["short", "short_heldout"])
    return [task_status(Path(root).expanduser(), key, verify=verify) for key in keys]
