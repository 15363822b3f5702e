"""Resuming a run: its saved `config.yaml` composed again, and a refusal of changes that matter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from nevisbench import layout
from nevisbench.config.compose import compose_checked
from nevisbench.config.keys import flatten, override_literal
from nevisbench.errors import ConfigError

__all__ = ["HARMLESS_ON_RESUME", "compose_resume"]

# Keys a resumed run may change: they do not affect what is computed.
HARMLESS_ON_RESUME = ("logger.", "trainer.progress_bar", "trainer.log_every_n_steps", "out_dir", "resume", "choices.logger")




def _read_saved(path: Path, run_dir: str) -> dict[str, Any]:
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))  # plain data: no interpolation
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"Cannot resume '{run_dir}': its config.yaml cannot be read ({reason})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"Cannot resume '{run_dir}': its config.yaml does not hold a mapping")
    return saved


def compose_resume(run_dir: str, overrides: list[str]) -> DictConfig:
    """The saved config of `run_dir` with `overrides` applied; refuses changes that matter."""
    path = Path(os.path.expanduser(run_dir))
    saved_file = path / layout.CONFIG
    if not saved_file.is_file():
        raise ConfigError(f"Cannot resume '{run_dir}': it is not a nevisbench run folder (no config.yaml)")
    saved = _read_saved(saved_file, run_dir)
    choices = saved.pop("choices", None) or {}
    flat = _renamed(flatten(saved))
    _refuse_other_options(run_dir, choices, overrides)
    base = [f"{group}={option}" for group, option in choices.items()]
    rechosen = {item.partition("=")[0].strip().lstrip("+") for item in overrides} & set(choices)
    dotted = [f"{key}={override_literal(value)}" for key, value in flat.items()  # a re-chosen group's
              if key not in ("learner.name", "stream.name") and key.split(".")[0] not in rechosen]  # own values
    cfg = compose_checked(overrides, saved=[*base, *dotted])
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    old = {**flat, **{f"choices.{k}": v for k, v in choices.items()}}
    # keys the saved config lacks (added to nevisbench since) keep their defaults
    changed = sorted(k for k in old if new.get(k) != old[k] and not k.startswith(HARMLESS_ON_RESUME))
    if changed:
        detail = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        raise ConfigError(f"Cannot resume '{run_dir}' with a different config: {detail}. "
                          "Start a new run instead, or drop those overrides.")
    with open_dict(cfg):
        cfg.resume = str(path)
    return cfg


def _renamed(flat: dict[str, Any]) -> dict[str, Any]:
    """A config saved before a key was renamed, in today's keys: `budget.count_search` (true/false)
    became `budget.x` (train+search / train)."""
    if "budget.count_search" in flat:
        flat = dict(flat)
        flat["budget.x"] = "train+search" if flat.pop("budget.count_search") else "train"
    return flat


def _refuse_other_options(run_dir: str, choices: dict[str, Any], overrides: list[str]) -> None:
    """Another option of a group (learner=, stream=, ...) is another experiment: refuse it at once,
    before the saved keys of the old option meet the schema of the new one."""
    changed = []
    for item in overrides:
        group, _, option = item.partition("=")
        group = group.strip().lstrip("+")
        if group in choices and option != choices[group] and not f"choices.{group}".startswith(HARMLESS_ON_RESUME):
            changed.append(f"choices.{group} ({choices[group]!r} -> {option!r})")
    if changed:
        raise ConfigError(f"Cannot resume '{run_dir}' with a different config: {', '.join(changed)}. "
                          "Start a new run instead, or drop those overrides.")
