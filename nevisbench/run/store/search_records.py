"""The checks on a search's resume files (`<run>/state/search_<task>/`): a finished trial's record
and the winner's weights are read back only when every field has the shape `TaskSearch.save` wrote,
so a damaged, truncated, edited or foreign file is one `DataError` naming it, never a traceback.

A record holds the SHA-256 of the weights file saved with it, so weights that are not the ones
that trial saved (truncated, edited, copied from another trial or run) are refused before loading.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from nevisbench.compute.flops import FlopTally
from nevisbench.errors import DataError

__all__ = ["check_record", "check_weights", "weights_digest"]

_TALLY = frozenset(f.name for f in fields(FlopTally))
_ANYTIME = {"fraction": "number", "step": "count", "train_flops": "number", "train_flops_executed": "number",
            "train_seconds": "number", "dev_error": "error", "lr": "rate"}
_BUDGET = {"flops_per_task": "number", "measure": "measure", "spent": "number", "ratio": "number"}
_RULES = ("last", "best_dev", "none")
_MEASURES = ("algorithmic", "executed", "seconds")


class _Bad(Exception):
    """What is wrong with one field (the caller names the file)."""


def weights_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _value(name: str, value: Any, kind: str) -> None:
    """Check one value: `number` (finite, >= 0), `count` (int >= 0), `error` (0..1 or None),
    `text` (str or None), `flag` (bool), `measure`, `digest` (a SHA-256 in hex, or None), `rate` (a
    learning rate: a number, or None where the learner has no optimizer)."""
    if kind == "flag":
        if not isinstance(value, bool):
            raise _Bad(f"'{name}' is {value!r}, not true/false")
        return
    if kind in ("text", "digest", "rate") and value is None:
        return
    if kind == "text":
        if not isinstance(value, str):
            raise _Bad(f"'{name}' is {type(value).__name__}, not text")
        return
    if kind == "digest":
        if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            raise _Bad(f"'{name}' is {str(value)[:40]!r}, not a SHA-256 digest")
        return
    if kind == "measure":
        if value not in _MEASURES:
            raise _Bad(f"'{name}' is {str(value)[:40]!r}, not one of {', '.join(_MEASURES)}")
        return
    if kind == "error" and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "count" and not isinstance(value, int)):
        raise _Bad(f"'{name}' is {str(value)[:40]!r}, not {'an integer' if kind == 'count' else 'a number'}")
    if not math.isfinite(value) or value < 0 or (kind == "error" and value > 1):
        raise _Bad(f"'{name}' is {value!r}, out of range ({'0..1' if kind == 'error' else '>= 0, finite'})")


def _mapping(name: str, value: Any, kinds: dict[str, str], *, optional: frozenset[str] = frozenset(),
             check: bool = True) -> None:
    """A dict holding exactly the keys of `kinds` (those in `optional` may be absent), each checked
    (unless not `check`)."""
    if not isinstance(value, dict):
        raise _Bad(f"'{name}' is {type(value).__name__}, not a mapping")
    missing = sorted(set(kinds) - value.keys() - optional)
    extra = sorted(str(k) for k in value.keys() - kinds.keys())
    if missing or extra:
        raise _Bad(f"'{name}' has " + "; ".join(
            ([f"no {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])))
    for key, kind in kinds.items():
        if check and key in value:
            _value(f"{name}.{key}", value[key], kind)


_RECORD = {"k": "count", "overrides": "overrides", "dev_error": "error", "failure": "text", "tally": "tally",
           "steps": "count", "anytime": "anytime", "selected": "selected", "budget": "budget", "seconds": "number",
           "pruned": "flag", "learner": "learner", "weights_sha256": "digest"}


def _field(key: str, value: Any) -> None:
    if key == "overrides":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Bad("'overrides' is not a mapping of config keys to values")
    elif key == "tally":
        _mapping("tally", value, dict.fromkeys(_TALLY, "number"))
    elif key == "anytime":
        if not isinstance(value, list):
            raise _Bad(f"'anytime' is {type(value).__name__}, not a list")
        for j, milestone in enumerate(value):
            _mapping(f"anytime[{j}]", milestone, _ANYTIME, optional=frozenset({"lr"}))
    elif key == "selected":
        if not isinstance(value, dict) or value.get("rule") not in _RULES:
            raise _Bad(f"'selected' is {str(value)[:60]!r}, not a selection rule ({', '.join(_RULES)})")
        if value["rule"] == "best_dev":
            _mapping("selected", value, {"rule": "text", "step": "count", "dev_error": "error"})
    elif key == "budget":
        if value is not None:
            _mapping("budget", value, _BUDGET)
    elif key == "learner":
        if value is not None and not isinstance(value, dict):
            raise _Bad(f"'learner' is {type(value).__name__}, not a learner state (a mapping)")
    else:
        _value(key, value, _RECORD[key])


def check_record(record: Any, path: Path, k: int, fix: str) -> dict[str, Any]:
    """`record`, read from `path` as trial k's, when it has every field `TaskSearch.save` writes with
    its type and range; otherwise a one-line DataError naming the file, the field and `fix`."""
    try:
        if not isinstance(record, dict):
            raise _Bad(f"it holds a {type(record).__name__}, not a trial record")
        _mapping("record", record, _RECORD, optional=frozenset({"pruned"}), check=False)
        for key in record:
            _field(key, record[key])
        if record["k"] != k:
            raise _Bad(f"it is the record of trial {record['k']}, not of trial {k}")
    except _Bad as bad:
        raise DataError(f"Cannot resume: the search record {path} is damaged ({bad}); {fix}") from None
    return record


def check_weights(weights: Any, path: Path, fix: str) -> dict[str, Any]:
    """The winner's weights as loaded from `path`: a mapping of parameter names to tensors."""
    import torch

    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise DataError(f"Cannot resume: the trial weights {path} are not a model's weights (a mapping of "
                        f"names to tensors); {fix}")
    return weights
