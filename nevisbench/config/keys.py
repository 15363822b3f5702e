"""Dotted keys of a nested mapping (`{"train": {"lr": 0.1}}` -> `{"train.lr": 0.1}`: the resume diff,
the search space, the sweep comparison) and values written as override literals that parse back to
the same value (`override_literal`: resume, the sweep's job overrides). Standard library only, so
any module may use it."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["flatten", "override_literal"]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of the nested dicts in `node` under its dotted key (an empty dict has no leaf)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _quoted(text: str) -> str:
    """`text` as a single-quoted value of Hydra's override grammar, parsing back to `text`.

    In a quoted value backslashes are special only before a quote or at the end, where each is
    doubled; a quote is escaped by one more backslash. `${` gets omegaconf's escape (a backslash,
    and its own backslashes doubled) so it stays literal instead of becoming an interpolation.
    """
    out: list[str] = []
    backslashes = 0
    for char in re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text):
        if char == "\\":
            backslashes += 1
            continue
        if char == "'":
            out.append("\\" * (2 * backslashes) + "\\'")
        else:
            out.append("\\" * backslashes + char)
        backslashes = 0
    out.append("\\" * (2 * backslashes))
    return "'" + "".join(out) + "'"


def override_literal(value: Any) -> str:
    """A value as an override string that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, list):
        return "[" + ",".join(override_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quoted(str(k))}:{override_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)
