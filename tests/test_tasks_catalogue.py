"""The catalogue is the one home of dataset facts: every preparable dataset resolves to a reader,
files and a split rule from `nevis_short.yaml`; bad entries fail with one line."""

from __future__ import annotations

import pytest

from nevisbench.errors import ConfigError, DataError
from nevisbench.tasks import datasets as catalogue_module
from nevisbench.tasks.datasets import dataset_entry, dataset_keys, get_dataset
from nevisbench.tasks.splits import SPLITS, split_rule


@pytest.mark.parametrize("key", dataset_keys())
def test_every_dataset_resolves_from_the_catalogue(key: str) -> None:
    dataset = get_dataset(key)
    assert callable(dataset.read) and dataset.channels in (1, 3) and dataset.rule
    assert dataset.files and all(f.url or f.pattern for f in dataset.files)
    assert dataset.num_classes == dataset_entry(key)["num_classes"]
    assert dataset.read.__module__.startswith("nevisbench.tasks.readers.")


def test_the_four_splits_are_defined_once() -> None:
    assert SPLITS == ("train", "dev", "dev_test", "test")


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"Unknown dataset 'mnsit'\. Valid: .*mnist.* Did you mean 'mnist'\?"):
        dataset_entry("mnsit")


def test_bad_reader_reference_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {**dataset_entry("usps"), "prepare": {**dataset_entry("usps")["prepare"], "reader": "usps:no_such_reader"}}
    monkeypatch.setattr(catalogue_module, "dataset_entry", lambda key: entry)
    get_dataset.cache_clear()
    try:
        with pytest.raises(DataError, match=r"usps: prepare.reader 'usps:no_such_reader' in nevis_short.yaml names no "
                                            r"function or constant of nevisbench.tasks.readers \(expected 'module:name'"):
            get_dataset("usps")
    finally:
        get_dataset.cache_clear()


def test_bad_split_rule_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"Unknown split rule of 'x' in nevis_short.yaml: 'tfds_train_tset'.*"
                                          r"Did you mean 'tfds_train_test'\?"):
        split_rule({"rule": "tfds_train_tset"}, key="x")
    with pytest.raises(DataError, match=r"x: bad parameters \{'fraction': 1\} for split rule 'random_all'"):
        split_rule({"rule": "random_all", "fraction": 1}, key="x")
