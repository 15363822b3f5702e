"""A sweep's grid: command-line overrides (and an experiment preset) expanded into jobs.

The grammar is Hydra's override grammar, parsed by Hydra's own `OverridesParser`: a comma list
(`learner.sparsity=0.25,0.5`), `range(0,3)`, `choice(a,b)`, `glob(conv*)` for a group's options.
One addition, `logspace(start,stop,num)`, is rewritten to an explicit comma list before parsing:
`num` values from `start` to `stop` (both included) evenly spaced on a log axis (numpy's
`geomspace`), 4 significant digits. Keys that configure the sweep itself (`launcher`,
`launcher.*`, `sweep_dir`, `experiment`, `resume`) are split off; every other override goes to
each job's `nevisbench run`.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override

from nevisbench.errors import ConfigError, choice_error

__all__ = ["SWEEP_KEYS", "Grid", "expand_logspace", "parse_sweep", "experiment_options", "load_experiment", "job_name"]

# Keys of the sweep itself, never passed to a run.
SWEEP_KEYS = ("launcher", "sweep_dir", "experiment", "resume")
# Keys the sweep sets for every job: the user cannot choose them.
JOB_KEYS = ("run_name", "out_dir")

_LOGSPACE = re.compile(r"logspace\(([^()]*)\)")


def expand_logspace(item: str) -> str:
    """`key=logspace(1e11,1e13,3)` -> `key=1e+11,1e+12,1e+13` (any other text unchanged)."""
    def explicit(match: re.Match[str]) -> str:
        parts = [p.strip() for p in match.group(1).split(",")]
        try:
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            if len(parts) != 3 or start <= 0 or stop <= 0 or num < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f"Bad sweep value in '{item}': logspace takes (start, stop, num) with start, stop > 0 "
                              "and num >= 1, e.g. logspace(1e11,1e13,5)") from None
        if num == 1:
            return f"{start:.4g}"
        step = (math.log10(stop) - math.log10(start)) / (num - 1)
        return ",".join(f"{10 ** (math.log10(start) + i * step):.4g}" for i in range(num))

    return _LOGSPACE.sub(explicit, item)


@dataclass(frozen=True)
class Grid:
    """The expanded grid: one override list per job, plus the sweep's own settings."""

    jobs: tuple[tuple[str, ...], ...]  # each job's run overrides, in grid order
    swept: tuple[str, ...]  # the keys that take several values (they name the jobs)
    sweep: dict[str, str]  # sweep-level overrides: launcher=, launcher.*=, sweep_dir=, experiment=, resume=


def _values(override: Override, item: str) -> list[str]:
    """The values of one override as strings, in order."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if isinstance(override.value(), Glob):
        from nevisbench.config import GROUPS, group_options

        if override.key_or_group not in GROUPS:
            raise ConfigError(f"Bad sweep value in '{item}': glob() selects options of a config group "
                              f"({', '.join(GROUPS)}), not values of '{override.key_or_group}'")
        return list(override.value().filter(group_options(override.key_or_group)))
    if not override.is_discrete_sweep():
        raise ConfigError(f"Bad sweep value in '{item}': an interval has no finite list of values; use a comma "
                          "list, range(start,stop,step) or logspace(start,stop,num)")
    return list(override.sweep_string_iterator())


def parse_sweep(overrides: list[str]) -> Grid:
    """Expand `overrides` (later ones beat earlier ones on the same key) into the grid of jobs."""
    parser = OverridesParser.create()
    by_key: dict[str, list[str]] = {}
    sweep: dict[str, str] = {}
    for raw in overrides:
        key, sep, _ = raw.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Bad override '{raw}': expected key=value or key=a,b,c, e.g. learner=finetune,conv_prune")
        item = expand_logspace(raw)
        try:
            (override,) = parser.parse_overrides([item])
        except Exception as exc:  # hydra's OverrideParseException, several lines
            reason = " ".join(str(exc).split())
            raise ConfigError(f"Bad override '{raw}': {reason}") from None
        key = override.get_key_element()
        head = key.split(".")[0]
        if head in SWEEP_KEYS:
            if override.is_sweep_override():
                raise ConfigError(f"Bad override '{raw}': '{key}' configures the sweep and takes one value")
            sweep[key] = override.get_value_element_as_str()
            continue
        if key in JOB_KEYS:
            raise ConfigError(f"Bad override '{raw}': the sweep sets '{key}' for each job (run folders go to "
                              "<sweep_dir>/runs/<job name>); set sweep_dir=DIR instead")
        values = _values(override, raw)
        if not values:
            raise ConfigError(f"Bad override '{raw}': it selects no value")
        by_key[key] = [f"{key}={v}" for v in values]  # a later one replaces an earlier one, in its place
    jobs = tuple(tuple(combo) for combo in itertools.product(*by_key.values())) if by_key else ((),)
    swept = tuple(k for k, v in by_key.items() if len(v) > 1)
    return Grid(jobs=jobs, swept=swept, sweep=sweep)


def experiment_options() -> list[str]:
    from nevisbench.config import config_dir

    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _as_override(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if value is None:
        return f"{key}=null"
    if isinstance(value, list):  # a YAML list in `sweep:` is a list of values to sweep
        return f"{key}=" + ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value)
    return f"{key}={value}"


def load_experiment(name: str) -> list[str]:
    """The overrides of the preset `configs/experiment/<name>.yaml`: its `overrides` (fixed
    values, `key: value`) then its `sweep` (`key: a,b,c`); command-line overrides go after them."""
    from nevisbench.config import config_dir

    path = config_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise choice_error("experiment", name, experiment_options())
    try:
        preset = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot read experiment preset {path}: {' '.join(str(exc).split())}") from None
    unknown = sorted(set(preset) - {"overrides", "sweep"}) if isinstance(preset, dict) else ["(not a mapping)"]
    if unknown:
        raise ConfigError(f"Experiment preset {path}: unknown section(s) {', '.join(unknown)}. Valid: overrides, sweep")
    items = []
    for section in ("overrides", "sweep"):
        block = preset.get(section) or {}
        if not isinstance(block, dict):
            raise ConfigError(f"Experiment preset {path}: '{section}' must map keys to values")
        items += [_as_override(str(k), v) for k, v in block.items()]
    return items


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:g}" if not value.lstrip("+-").isdigit() else value


def job_name(index: int, overrides: tuple[str, ...], swept: tuple[str, ...]) -> str:
    """`003-conv_prune-sparsity=0.5-seed=1`: the index, then the swept values (a folder name)."""
    from nevisbench.config import GROUPS

    parts = [f"{index:03d}"]
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in swept:
            continue
        short = _short(value)
        parts.append(short if key in GROUPS else f"{key.rpartition('.')[2]}={short}")
    return _UNSAFE.sub("_", "-".join(parts))[:120]


def sweep_name(path: Path) -> str:
    return path.resolve().name
