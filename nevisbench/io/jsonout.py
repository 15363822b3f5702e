"""The one serialiser of every `--json` output: whatever a command reports (OmegaConf containers,
numpy scalars and arrays, tensors, paths, tuples, sets, dataclasses, enums, non-finite floats) comes
out as strict JSON, so no learner, backbone or option can make a `--json` command end in a traceback."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["plain", "dumps"]


def plain(value: Any) -> Any:
    """`value` as plain JSON data: dicts with string keys, lists, str, int, float, bool, None.
    A float that is not finite becomes None (strict JSON has no NaN); anything else unknown, its str."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__.startswith("omegaconf"):  # DictConfig, ListConfig
        from omegaconf import OmegaConf

        return plain(OmegaConf.to_container(value, resolve=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays, torch tensors
        return plain(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # other 0-d numerics
        return plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=repr)
    if isinstance(value, (list, tuple, range)) or (hasattr(value, "__iter__") and not isinstance(value, (bytes, bytearray))):
        return [plain(v) for v in value]
    return str(value)


def dumps(value: Any) -> str:
    """`value` as indented, strict JSON text (see `plain`)."""
    return json.dumps(plain(value), indent=2, allow_nan=False)
