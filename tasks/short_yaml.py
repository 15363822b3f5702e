"""The SHORT catalogue file (`nevis_short.yaml`, shipped with the package), parsed once: the one
home of every dataset fact (sources, checksums, split rules, deviations). `datasets.py` reads its
entries; `splits.py` its fraction sets."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

__all__ = ["catalogue"]


@functools.cache
def catalogue() -> dict[str, Any]:
    """The parsed `nevis_short.yaml` that ships with the package (read once)."""
    import yaml

    text = resources.files("nevisbench.tasks").joinpath("nevis_short.yaml").read_text()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
