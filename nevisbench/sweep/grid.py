"""A sweep's grid: command-line overrides (and an experiment preset) expanded into jobs.

The grammar is Hydra's override grammar, parsed by Hydra's own `OverridesParser`: a comma list
(`learner.sparsity=0.25,0.5`), `range(0,3)`, `choice(a,b)`, `glob(conv*)` for a group's options.
`shuffle(...)` shuffles with a seed taken from the override's text, so the same command gives the
same jobs in the same order on every invocation (a rerun resumes the same grid). One addition,
`logspace(start,stop,num)`, is rewritten to an explicit comma list before parsing:
`num` values from `start` to `stop` (both included) evenly spaced on a log axis (numpy's
`geomspace`), 4 significant digits. Keys that configure the sweep itself (`launcher`,
`launcher.*`, `sweep_dir`, `experiment`, `resume`, `sweep.max_jobs`) are split off; every other
override goes to each job's `nevisbench run`. A grid of more than `sweep.max_jobs` jobs (default
10,000) is refused from the sizes of its axes, before any value list or job is made.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, RangeSweep

from nevisbench.config import GROUPS, config_dir, group_options
from nevisbench.errors import ConfigError, choice_error

__all__ = [
    "SWEEP_KEYS",
    "MAX_JOBS",
    "Grid",
    "check_grid_size",
    "max_jobs",
    "expand_logspace",
    "parse_sweep",
    "experiment_options",
    "load_experiment",
    "job_name",
]

# Keys of the sweep itself, never passed to a run.
SWEEP_KEYS = ("launcher", "sweep_dir", "experiment", "resume", "sweep")
MAX_JOBS = 10_000  # sweep.max_jobs: the largest grid expanded unless the command raises it
# Keys the sweep sets for every job: the user cannot choose them.
JOB_KEYS = ("run_name", "out_dir")

_LOGSPACE = re.compile(r"logspace\(([^()]*)\)")


def _logspace_args(item: str, match: re.Match[str]) -> tuple[float, float, int]:
    parts = [p.strip() for p in match.group(1).split(",")]
    try:
        start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or not (0 < start < math.inf and 0 < stop < math.inf) or num < 1:
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(
            f"Bad sweep value in '{item}': logspace takes (start, stop, num) with start, stop > 0 and num >= 1, e.g. logspace(1e11,1e13,5)"
        ) from None
    return start, stop, num


def expand_logspace(item: str, limit: int = MAX_JOBS) -> str:
    """`key=logspace(1e11,1e13,3)` -> `key=1e+11,1e+12,1e+13` (any other text unchanged); a `num`
    above `limit` is refused before a value is made."""

    def explicit(match: re.Match[str]) -> str:
        start, stop, num = _logspace_args(item, match)
        if num > limit:
            check_grid_size({item.partition("=")[0]: num}, limit)
        if num == 1:
            return f"{start:.4g}"
        step = (math.log10(stop) - math.log10(start)) / (num - 1)
        return ",".join(f"{10 ** (math.log10(start) + i * step):.4g}" for i in range(num))

    return _LOGSPACE.sub(explicit, item)


def check_grid_size(sizes: dict[str, int], limit: int) -> int:
    """The number of jobs of a grid with these axis sizes; more than `limit` is a one-line error."""
    total = math.prod(sizes.values())
    if total > limit or any(n > limit for n in sizes.values()):
        axes = " x ".join(f"{key}: {n:,}" for key, n in sizes.items() if n > 1)
        raise ConfigError(
            f"The grid has {total:,} jobs ({axes}), more than sweep.max_jobs={limit:,}; split the "
            f"study into smaller sweeps, or raise the limit with sweep.max_jobs=N"
        )
    return total


def max_jobs(overrides: list[str]) -> int:
    """`sweep.max_jobs` from the command (the last one wins), else MAX_JOBS."""
    given = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "sweep.max_jobs"]
    if not given:
        return MAX_JOBS
    if not given[-1].isdigit() or int(given[-1]) < 1:
        raise ConfigError(f"Invalid value for 'sweep.max_jobs': '{given[-1]}'. It must be a whole number >= 1")
    return int(given[-1])


@dataclass(frozen=True)
class Grid:
    """The expanded grid: one override list per job, plus the sweep's own settings."""

    jobs: tuple[tuple[str, ...], ...]  # each job's run overrides, in grid order
    swept: tuple[str, ...]  # the keys that take several values (they name the jobs)
    sweep: dict[str, str]  # sweep-level overrides: launcher=, launcher.*=, sweep_dir=, experiment=, resume=


def _count(override: Override) -> int | None:
    """How many values a range() sweep gives, from its bounds (None: count the listed values)."""
    value = override.value()
    if not isinstance(value, RangeSweep) or value.start is None or value.stop is None or not value.step:
        return None
    return max(0, math.ceil((value.stop - value.start) / value.step))


def _values(override: Override, item: str) -> list[str]:
    """The values of one override as strings, in order."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if isinstance(glob := override.value(), Glob):
        if override.key_or_group not in GROUPS:
            raise ConfigError(
                f"Bad sweep value in '{item}': glob() selects options of a config group "
                f"({', '.join(GROUPS)}), not values of '{override.key_or_group}'"
            )
        return list(glob.filter(group_options(override.key_or_group)))
    if not override.is_discrete_sweep():
        raise ConfigError(
            f"Bad sweep value in '{item}': an interval has no finite list of values; use a comma "
            "list, range(start,stop,step) or logspace(start,stop,num)"
        )
    state = random.getstate()  # Hydra's shuffle() draws from the global random: seed it from the text,
    random.seed(item)  # so a rerun of the same command lists the same jobs in the same order
    try:
        return list(override.sweep_string_iterator())
    finally:
        random.setstate(state)


def _sweep_key(key: str, override: Override, raw: str) -> None:
    if override.is_sweep_override():
        raise ConfigError(f"Bad override '{raw}': '{key}' configures the sweep and takes one value")
    if key.split(".")[0] == "sweep" and key != "sweep.max_jobs":
        raise ConfigError(f"Unknown config key '{key}': the sweep's own settings are sweep.max_jobs")


def parse_sweep(overrides: list[str]) -> Grid:
    """Expand `overrides` (later ones beat earlier ones on the same key) into the grid of jobs;
    a grid larger than `sweep.max_jobs` is refused from its axis sizes, before it is expanded."""
    limit = max_jobs(overrides)
    parser = OverridesParser.create()
    by_key: dict[str, tuple[Override, str]] = {}
    sweep: dict[str, str] = {}
    for raw in overrides:
        key, sep, _ = raw.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Bad override '{raw}': expected key=value or key=a,b,c, e.g. learner=finetune,conv_prune")
        item = expand_logspace(raw, limit)
        try:
            (override,) = parser.parse_overrides([item])
        except Exception as exc:  # hydra's OverrideParseException, several lines
            reason = " ".join(str(exc).split())
            raise ConfigError(f"Bad override '{raw}': {reason}") from None
        key = override.get_key_element()
        if key.split(".")[0] in SWEEP_KEYS:
            _sweep_key(key, override, raw)
            sweep[key] = override.get_value_element_as_str()
            continue
        if key in JOB_KEYS:
            raise ConfigError(
                f"Bad override '{raw}': the sweep sets '{key}' for each job (run folders go to "
                "<sweep_dir>/runs/<job name>); set sweep_dir=DIR instead"
            )
        by_key[key] = (override, raw)  # a later one replaces an earlier one, in its place
    counts = {key: _count(override) for key, (override, _) in by_key.items()}
    check_grid_size({k: n for k, n in counts.items() if n is not None}, limit)  # before any range is listed
    values: dict[str, list[str]] = {}
    for key, (override, raw) in by_key.items():
        values[key] = [f"{key}={v}" for v in _values(override, raw)]
        if not values[key]:
            raise ConfigError(f"Bad override '{raw}': it selects no value")
    check_grid_size({key: len(v) for key, v in values.items()}, limit)
    jobs = tuple(tuple(combo) for combo in itertools.product(*values.values())) if values else ((),)
    swept = tuple(k for k, v in values.items() if len(v) > 1)
    return Grid(jobs=jobs, swept=swept, sweep=sweep)


def experiment_options() -> list[str]:
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
