"""The Nevis'22 SHORT stream with ImageNet removed, from the catalogue `nevis_short.yaml`.

Streams: `short` (the 24 events before 2020, MNIST twice), `short_objects` (its 16 object events),
`short_ood` (its 8 non-object events), `short_heldout` (the 2020 group). Every task reads the
packed cache that `nevisbench data prepare` writes under `data.root`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nevisbench.tasks.catalog import Stream, TaskSpec, register_stream
from nevisbench.tasks.datasets import catalogue, dataset_entry
from nevisbench.tasks.splits import SPLITS

__all__ = ["short_events", "load_prepared", "STREAM_NAMES"]

STREAM_NAMES = ("short", "short_objects", "short_ood", "short_heldout")


def load_prepared(key: str, *, root: str, image_size: int, seed: int, verify: bool = True, **_: object) -> Any:
    """A prepared task's train/dev/dev_test/test splits from the packed cache in `root`."""
    import torch

    from nevisbench.tasks.cache import load_packed
    from nevisbench.tasks.loader import Split, TaskData

    packed = load_packed(Path(root), key, verify=verify)
    entry = dataset_entry(key)
    splits = {}
    for name in SPLITS:
        images, labels = packed.split(name)
        labels_t = torch.from_numpy(labels.astype("int64" if labels.ndim == 1 else "uint8"))
        splits[name] = Split(torch.from_numpy(images), labels_t)
    return TaskData(key=key, num_classes=int(entry["num_classes"]), hflip=entry["domain"] != "ocr",
                    multi_label=bool(entry["multi_label"]), **splits)


def _task(event: dict[str, Any]) -> TaskSpec:
    entry = dataset_entry(event["key"])
    return TaskSpec(key=event["key"], name=event["display_name"], domain=event["domain"],
                    num_classes=int(entry["num_classes"]), multi_label=bool(entry["multi_label"]),
                    year=int(event["year"]), source="prepared", position=int(event["position_without_imagenet"]),
                    requires_data=True, load=functools.partial(load_prepared, event["key"]))


def short_events(*, held_out: bool = False) -> list[dict[str, Any]]:
    """Catalogue events in stream order: before 2020 without ImageNet, or the 2020 group."""
    return [e for e in catalogue()["stream_order"]
            if e["key"] != "imagenet" and bool(e["held_out"]) == held_out]


def _stream(name: str, description: str, keep: Callable[[dict[str, Any]], bool] | None = None,
            held_out: bool = False) -> Stream:
    events = [e for e in short_events(held_out=held_out) if keep is None or keep(e)]
    return Stream(name, description, tuple(_task(e) for e in events))


@register_stream("short")
def short_stream() -> Stream:
    return _stream("short", "Nevis'22 SHORT, ImageNet removed: 24 events 2004-2019 (MNIST twice)")


@register_stream("short_objects")
def short_objects_stream() -> Stream:
    return _stream("short_objects", "the 16 object-recognition events of SHORT", lambda e: e["domain"] == "object")


@register_stream("short_ood")
def short_ood_stream() -> Stream:
    return _stream("short_ood", "the 8 non-object events of SHORT (OCR, scenes, faces, texture, medical)",
                   lambda e: e["domain"] != "object")


@register_stream("short_heldout")
def short_heldout_stream() -> Stream:
    return _stream("short_heldout", "the held-out 2020 group (dogs, birds, cars, aircraft)", held_out=True)
