"""The four splits of a SHORT task and the Nevis'22 split rules, as index arithmetic.

`SPLITS` is the one definition of the split names in `nevisbench.tasks`. A rule turns the
examples' groups (the tag a reader gives each example: its official split, a pool, a domain) into
`{split: int64 indices}` over the task's packed examples, in packing order. `train_and_dev` is
always the union of `train` and `dev` and is not stored.

Each dataset names its rule and the rule's parameters in the catalogue (`nevis_short.yaml`,
`prepare.split`); the fraction sets are the catalogue's `split_rules.nevis_random_assignment`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nevisbench.errors import DataError, choice_error
from nevisbench.tasks.short_yaml import catalogue

__all__ = ["SPLITS", "ALL_DATA", "FOR_TRAIN", "TRAIN_AND_DEV_ONLY", "TEST_AND_DEV_TEST", "SPLIT_RULES",
           "fraction_set", "split_rule", "random_assignment", "tfds_train_test", "first_fraction", "merge"]

SPLITS = ("train", "dev", "dev_test", "test")

SplitRule = Callable[[np.ndarray], dict[str, np.ndarray]]


@functools.cache
def fraction_set(name: str) -> dict[str, float]:
    """A Nevis fraction set by name (e.g. `SPLIT_WITH_FRACTIONS_FOR_ALL_DATA`) from the catalogue,
    split names spelled as the Nevis handlers spell them (`dev-test`)."""
    sets = catalogue()["split_rules"]["nevis_random_assignment"]["fraction_sets"]
    by_name = {full.split()[0]: values for full, values in sets.items()}  # keys may carry a note after the name
    if name not in by_name:
        raise choice_error("fraction set", name, by_name)
    return {split: float(value) for split, value in by_name[name].items()}


ALL_DATA = fraction_set("SPLIT_WITH_FRACTIONS_FOR_ALL_DATA")
FOR_TRAIN = fraction_set("SPLIT_WITH_FRACTIONS_FOR_TRAIN")
TRAIN_AND_DEV_ONLY = fraction_set("SPLIT_WITH_FRACTIONS_FOR_TRAIN_AND_DEV_ONLY")
TEST_AND_DEV_TEST = fraction_set("SPLIT_WITH_FRACTIONS_FOR_TEST_AND_DEV_TEST")


def _name(split: str) -> str:
    return split.replace("-", "_")


def random_assignment(positions: Sequence[int] | np.ndarray, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Nevis' `random_split_generator_into_splits_with_fractions`: walk the elements in order, draw
    once per element from one `RandomState(seed).multinomial(1, p)` with the split names sorted
    alphabetically, and put the element in the split of the draw's argmax.

    Sizes depend only on the element count; membership on the element order. Checked against the
    catalogue's sizes (e.g. 4485 scenes -> 2496/525/555/909)."""
    positions = np.asarray(positions, dtype=np.int64)
    names = sorted(fractions)
    p = [fractions[n] for n in names]
    rng = np.random.RandomState(seed)
    draws = np.fromiter((int(np.argmax(rng.multinomial(1, p))) for _ in range(len(positions))), dtype=np.int64, count=len(positions))
    return {_name(n): positions[draws == i] for i, n in enumerate(names)}


def tfds_train_test(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """`tfds_train_test`: train = first int(0.7N) of the official train split, dev = the next
    int(0.15N), dev_test = the rest, test = the official test split."""
    train = np.asarray(train, dtype=np.int64)
    n = len(train)
    a, b = int(0.7 * n), int(0.7 * n) + int(0.15 * n)
    return {"train": train[:a], "dev": train[a:b], "dev_test": train[b:], "test": np.asarray(test, dtype=np.int64)}


def first_fraction(positions: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first int(fraction * N) elements and the rest."""
    positions = np.asarray(positions, dtype=np.int64)
    cut = int(fraction * len(positions))
    return positions[:cut], positions[cut:]


def merge(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate split dictionaries; every split in `SPLITS` is present in the result."""
    out = {}
    for split in SPLITS:
        pieces = [p[split] for p in parts if split in p]
        out[split] = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, dtype=np.int64)
    return out


# -- the rules the catalogue names (`prepare.split.rule`) ----------------------------------------
def _where(groups: np.ndarray, *names: str) -> np.ndarray:
    return np.flatnonzero(np.isin(groups, names)).astype(np.int64)


def _by_group() -> SplitRule:
    """Each example's group is already its split (pose bins, per-identity rules, tiles)."""
    return lambda groups: merge({s: _where(groups, s) for s in SPLITS})


def _random_all(*, fractions: str) -> SplitRule:
    """Random assignment over every example, in reading order."""
    return lambda groups: merge(random_assignment(np.arange(len(groups)), fraction_set(fractions)))


def _random_pool_and_test(*, fractions: str) -> SplitRule:
    """Random assignment over the 'pool' examples; the 'test' examples are the test split."""
    return lambda groups: merge(random_assignment(_where(groups, "pool"), fraction_set(fractions)),
                                {"test": _where(groups, "test")})


def _random_two_pools(*, train_pool: str, train_fractions: str, test_pool: str, test_fractions: str) -> SplitRule:
    """Two independent random assignments (each RandomState(0)): one over the `train_pool` group
    (train/dev), one over the `test_pool` group (dev_test/test)."""
    return lambda groups: merge(random_assignment(_where(groups, train_pool), fraction_set(train_fractions)),
                                random_assignment(_where(groups, test_pool), fraction_set(test_fractions)))


def _tfds_train_test() -> SplitRule:
    return lambda groups: tfds_train_test(_where(groups, "train"), _where(groups, "test"))


def _official_train_cut(*, train_fraction: float, val: str) -> SplitRule:
    """Official 'train': the first `train_fraction` -> train, the rest -> dev. Official 'val' ->
    dev_test (`val: dev_test`), or its first half -> dev_test and second half -> test (`val: halves`);
    official 'test' -> test."""
    if val not in ("dev_test", "halves"):
        raise choice_error("value of prepare.split.val", val, ("dev_test", "halves"))

    def rule(groups: np.ndarray) -> dict[str, np.ndarray]:
        train, dev = first_fraction(_where(groups, "train"), train_fraction)
        official_val = _where(groups, "val")
        if val == "dev_test":
            return merge({"train": train, "dev": dev, "dev_test": official_val, "test": _where(groups, "test")})
        half = len(official_val) // 2
        return merge({"train": train, "dev": dev, "dev_test": official_val[:half], "test": official_val[half:]})

    return rule


SPLIT_RULES: dict[str, Callable[..., SplitRule]] = {
    "by_group": _by_group,
    "random_all": _random_all,
    "random_pool_and_test": _random_pool_and_test,
    "random_two_pools": _random_two_pools,
    "tfds_train_test": _tfds_train_test,
    "official_train_cut": _official_train_cut,
}


def split_rule(spec: dict[str, Any], *, key: str) -> SplitRule:
    """The split function a catalogue entry's `prepare.split` describes (`rule:` plus parameters)."""
    spec = dict(spec)
    name = spec.pop("rule", None)
    if name not in SPLIT_RULES:
        raise choice_error(f"split rule of '{key}' in nevis_short.yaml:", name, SPLIT_RULES)
    try:
        return SPLIT_RULES[name](**spec)
    except TypeError as exc:
        raise DataError(f"{key}: bad parameters {spec} for split rule '{name}' in nevis_short.yaml ({exc})") from None
