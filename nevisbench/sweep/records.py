"""Reading a sweep folder's records as untrusted input: `sweep.yaml` and `jobs.jsonl`.

Every field of every job line is checked (type and range), and the lines are checked against the
grid `sweep.yaml` records: a job's index, overrides and name must be the ones the grid gives, so a
tampered name (`../../x`) never becomes a path. A job the grid has and `jobs.jsonl` lacks (a deleted
line, an emptied file) is recreated from the grid as `pending`: the run folders, not the records,
say what is done, so the rerun finishes it instead of silently dropping it. Anything else wrong is
one `ConfigError` line naming the file, the line and the problem.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from nevisbench.errors import ConfigError
from nevisbench.run.store.results import UnreadableText, read_text
from nevisbench.sweep.grid import MAX_JOBS, check_grid_size, job_name

__all__ = ["STATES", "read_info", "read_jobs", "grid_jobs", "check_job_line"]

STATES = ("pending", "running", "done", "failed")
_JOB_ID = re.compile(r"\d+(_\d+)?")  # a SLURM job (array task) id, or the local executor's pid
_NUMBER = (int, float)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# field -> (check, what it must be); fields not listed keep their defaults when absent
_FIELDS: dict[str, tuple[Any, str]] = {
    "index": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "overrides": (_is_strings, "a list of strings"),
    "state": (lambda v: v in STATES, f"one of {', '.join(STATES)}"),
    "attempts": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "command": (_is_strings, "a list of strings"),
    "returncode": (lambda v: v is None or _is_int(v), "a whole number or null"),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "job_id": (lambda v: v is None or (isinstance(v, str) and _JOB_ID.fullmatch(v) is not None),
               "null or an engine job id such as 4242_3"),
    "devices": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "accelerator": (lambda v: isinstance(v, str), "a string"),
    "started": (lambda v: v is None or (isinstance(v, _NUMBER) and not isinstance(v, bool)), "a number or null"),
    "finished": (lambda v: v is None or (isinstance(v, _NUMBER) and not isinstance(v, bool)), "a number or null"),
}
_REQUIRED = ("index", "name", "overrides")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_job_line(record: Any) -> str | None:
    """What is wrong with one parsed jobs.jsonl line, or None."""
    if not isinstance(record, dict):
        return f"a job record is a JSON object, not {type(record).__name__}"
    unknown = sorted(set(record) - set(_FIELDS))
    if unknown:
        return f"unknown field '{unknown[0][:40]}' (valid: {', '.join(_FIELDS)})"
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        return f"missing field '{missing[0]}'"
    for key, value in record.items():
        check, what = _FIELDS[key]
        if not check(value):
            return f"'{key}' must be {what}, not {_shown(value)}"
    return None


def _read_text(path: Path) -> str:
    try:
        return read_text(path)
    except UnreadableText as exc:
        raise ConfigError(f"{exc}; restore it or start a fresh sweep") from None


def read_info(path: Path) -> dict[str, Any]:
    """`sweep.yaml`: a mapping whose grid (key -> values) and swept keys are well formed."""
    try:
        info = yaml.safe_load(_read_text(path))
    except (yaml.YAMLError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:160] if not isinstance(exc, RecursionError) else "nested too deeply"
        raise ConfigError(f"{path}: not a sweep record ({reason})") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: not a sweep record (a mapping of command, grid, launcher...)")
    grid = info.get("grid")
    if not isinstance(grid, dict) or not all(isinstance(k, str) and _is_strings(v) and v for k, v in grid.items()):
        raise ConfigError(f"{path}: 'grid' must map each key to its list of values (as strings)")
    swept = info.get("swept", [])
    if not _is_strings(swept) or not set(swept) <= set(grid):
        raise ConfigError(f"{path}: 'swept' must list keys of the grid")
    if info.get("launcher") is not None and not isinstance(info["launcher"], dict):
        raise ConfigError(f"{path}: 'launcher' must be a mapping of launcher settings")
    return info


def grid_jobs(info: dict[str, Any], limit: int = MAX_JOBS) -> list[tuple[str, ...]]:
    """The jobs' overrides the recorded grid gives, in grid order (its size checked first)."""
    grid = info["grid"]
    check_grid_size({k: len(v) for k, v in grid.items()}, max(limit, int(info.get("max_jobs") or 0)))
    return [tuple(combo) for combo in itertools.product(*([f"{k}={v}" for v in values] for k, values in grid.items()))]


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else f"not JSON ({exc.msg})"
        raise ConfigError(f"{path}: line {number}: {reason}; fix or delete that line (a rerun recreates "
                          "a deleted job from sweep.yaml)") from None
    problem = check_job_line(record)
    if problem:
        raise ConfigError(f"{path}: line {number}: {problem}; fix or delete that line (a rerun recreates "
                          "a deleted job from sweep.yaml)")
    return record


def read_jobs(path: Path, info: dict[str, Any], group: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The job records of `jobs.jsonl`, checked field by field and against the grid; returns them
    in index order with the grid's missing jobs recreated (pending), and those jobs' indices."""
    combos = grid_jobs(info)
    swept = tuple(info.get("swept", ()))
    found: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_line(path, number, line)
        index = record["index"]
        if index >= len(combos) or index in found:
            what = "a second record of" if index in found else "not in sweep.yaml's grid:"
            raise ConfigError(f"{path}: line {number}: {what} job {index} (the grid has {len(combos)} jobs); "
                              "delete that line")
        expected = job_name(index, combos[index], swept)
        overrides = [o for o in record["overrides"] if not o.startswith("logger.group=") or o in combos[index]]
        if record["name"] != expected or overrides != list(combos[index]):
            raise ConfigError(f"{path}: line {number}: job {index} is recorded as {_shown(record['name'])} with "
                              f"other overrides than sweep.yaml's grid gives it ({expected}); restore sweep.yaml, or "
                              "delete that line and move the job's run folder away to run it again with the new overrides")
        found[index] = record
    missing = [i for i in range(len(combos)) if i not in found]
    for index in missing:
        combo = combos[index]
        extra = [] if any(o.startswith("logger.group=") for o in combo) else [f"logger.group={group}"]
        found[index] = {"index": index, "name": job_name(index, combo, swept), "overrides": [*combo, *extra]}
    return [found[i] for i in sorted(found)], missing
