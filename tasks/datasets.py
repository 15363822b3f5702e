"""The SHORT datasets as the catalogue `nevis_short.yaml` describes them.

The catalogue is the one home of every dataset fact: the team's facts (`stream_order`, each entry
of `datasets`) plus, per dataset, a `prepare` block saying how nevisbench builds its task:

    prepare:
      reader: mnist:read_idx          # function `read_idx` of nevisbench.tasks.readers.mnist
      channels: 1                     # stored channels: 1 (grayscale datasets) or 3
      files:                          # what is fetched and verified; without it, source.download
      - {name: train-images-idx3-ubyte.gz, url: https://..., md5: ..., alternatives: [...]}
      skip: [faces.tar]               # (without `files`) source.download files the reader ignores
      split: {rule: tfds_train_test}  # a rule of nevisbench.tasks.splits.SPLIT_RULES + parameters
      rule: "..."                     # the split rule in words (docs, meta.json)
      deviations: ["..."]             # every known difference from the Nevis pipeline
      label_names: voc:VOC_CLASSES    # optional: a constant of a reader module

Adding a SHORT dataset touches one reader module (`tasks/readers/`) and the catalogue only.
`dataset_entry(key)` is the one lookup of a catalogue entry; `get_dataset(key)` builds its
`Dataset`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nevisbench.errors import DataError, choice_error
from nevisbench.tasks.archives import SourceFile, filename_from_url
from nevisbench.tasks.short_yaml import catalogue

__all__ = ["Dataset", "catalogue", "dataset_entry", "dataset_keys", "get_dataset", "datasets"]

READERS_PACKAGE = "nevisbench.tasks.readers"


@dataclass(frozen=True)
class Dataset:
    """How one SHORT task is built from its publisher's files."""

    key: str
    files: tuple[SourceFile, ...]
    channels: int  # stored channels: 1 (grayscale datasets) or 3
    read: Callable[[Any], Iterator[Any]] = field(repr=False)  # SourceFolder -> Examples, in Nevis order
    split: Callable[[np.ndarray], dict[str, np.ndarray]] = field(repr=False)  # groups -> indices per split
    rule: str = ""  # the split rule, in words (docs and metadata)
    deviations: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None
    num_classes: int = 0
    multi_label: bool = False


@functools.cache
def _entries() -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in catalogue()["datasets"]}


def dataset_keys() -> tuple[str, ...]:
    """Keys of the datasets nevisbench can prepare (those with a `prepare` block), catalogue order."""
    return tuple(key for key, entry in _entries().items() if "prepare" in entry)


def dataset_entry(key: str) -> dict[str, Any]:
    """The catalogue entry of dataset `key`."""
    entries = _entries()
    if key not in entries:
        raise choice_error("dataset", key, entries)
    return entries[key]


def _reference(text: str, key: str, what: str) -> Any:
    """`module:name` -> attribute `name` of `nevisbench.tasks.readers.<module>`."""
    module_name, _, attribute = str(text).partition(":")
    try:
        module = importlib.import_module(f"{READERS_PACKAGE}.{module_name}")
        return getattr(module, attribute)
    except (ImportError, AttributeError):
        raise DataError(f"{key}: prepare.{what} '{text}' in nevis_short.yaml names no function or constant of "
                        f"{READERS_PACKAGE} (expected 'module:name', e.g. 'mnist:read_idx')") from None


def _source_files(entry: dict[str, Any]) -> tuple[SourceFile, ...]:
    recipe = entry["prepare"]
    downloads = entry.get("source", {}).get("download", []) or []
    listed = recipe.get("files")
    if listed is None:  # the team's download list, less the files the reader does not need
        skip = set(recipe.get("skip", ()))
        return tuple(SourceFile(filename_from_url(item["url"]), item["url"], md5=item.get("md5"))
                     for item in downloads if filename_from_url(item["url"]) not in skip)
    files = []
    for item in listed:
        md5_any = item.get("md5_any", ())
        if md5_any == "source.download":  # any of the team's checksums (files without published names)
            md5_any = [d["md5"] for d in downloads if d.get("md5")]
        files.append(SourceFile(item.get("name") or item["pattern"], item.get("url"), md5=item.get("md5"),
                                sha256=item.get("sha256"), pattern=item.get("pattern"), md5_any=tuple(md5_any),
                                alternatives=tuple(item.get("alternatives", ()))))
    return tuple(files)


@functools.cache
def get_dataset(key: str) -> Dataset:
    """The `Dataset` of catalogue entry `key` (its reader imported on first use)."""
    from nevisbench.tasks.splits import split_rule

    entry = dataset_entry(key)
    recipe = entry.get("prepare")
    if recipe is None:
        raise choice_error("dataset to prepare", key, dataset_keys())
    labels = recipe.get("label_names")
    return Dataset(
        key=key, files=_source_files(entry), channels=int(recipe["channels"]),
        read=_reference(recipe["reader"], key, "reader"), split=split_rule(recipe["split"], key=key),
        rule=recipe["rule"], deviations=tuple(recipe.get("deviations", ())),
        label_names=tuple(_reference(labels, key, "label_names")) if labels else None,
        num_classes=int(entry["num_classes"]), multi_label=bool(entry["multi_label"]))


def datasets() -> dict[str, Dataset]:
    """Every preparable dataset by key."""
    return {key: get_dataset(key) for key in dataset_keys()}
