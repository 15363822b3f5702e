"""Dotted keys of a nested mapping: `{"train": {"lr": 0.1}}` -> `{"train.lr": 0.1}`. Used by the
resume diff, the search space and the sweep comparison (no imports, so any module may use it)."""

from __future__ import annotations

from typing import Any

__all__ = ["flatten"]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of the nested dicts in `node` under its dotted key (an empty dict has no leaf)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
