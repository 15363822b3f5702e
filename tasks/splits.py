"""The Nevis'22 split rules (see `nevis_short.yaml`, section `split_rules`), as index arithmetic.

Every rule returns `{split: int64 indices}` for the splits `train`, `dev`, `dev_test`, `test`
(indices into the task's packed examples, in packing order). `train_and_dev` is always the union
of `train` and `dev` and is not stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SPLITS", "ALL_DATA", "FOR_TRAIN", "TRAIN_AND_DEV_ONLY", "TEST_AND_DEV_TEST",
           "random_assignment", "tfds_train_test", "first_fraction", "merge"]

SPLITS = ("train", "dev", "dev_test", "test")

# Nevis fraction sets (handlers/splits.py); split names as the handlers spell them
ALL_DATA = {"train": 0.56, "dev": 0.12, "dev-test": 0.12, "test": 0.2}
FOR_TRAIN = {"train": 0.7, "dev": 0.15, "dev-test": 0.15}
TRAIN_AND_DEV_ONLY = {"train": 0.8, "dev": 0.2}
TEST_AND_DEV_TEST = {"dev-test": 0.5, "test": 0.5}


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
