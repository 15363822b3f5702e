"""Reading finished runs: the reader of a run folder (`summary.json` + `config.yaml`) that
`compare`, `plot`, the sweep's comparison and the notebook share (the conformance kit reads its
own runs' files directly).

A run folder is read into a `Run` (summary.json through the run folder's own reader,
`ResultsStore.read_summary`), whose every field is checked: a file that is missing, not
UTF-8, not JSON/YAML (or a YAML with a `!!python` tag: read with yaml's safe loader), nested too
deep, or of the wrong shape (a point without its error, a number written as a string, NaN or
infinite values, `stream: null`, ...) makes the run unreadable. `load_runs` skips an unreadable
run with one warning line naming its file and the reason, and returns the others.

A run's point (x = counted compute, y = final mean error) is the one `summary.json` holds; a
summary without one gets it from `nevisbench.run.store.scores.run_point`, the one place it is computed.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nevisbench import layout
from nevisbench.config.keys import flatten
from nevisbench.errors import ConfigError, DataError
from nevisbench.run.store.metrics import METRICS
from nevisbench.run.store.results import ResultsStore, UnreadableText, read_text
from nevisbench.run.store.scores import DEFAULT_X, X_CHOICES, run_point, sub_streams

__all__ = ["AXES", "Run", "UnreadableRun", "read_run", "run_dirs", "load_runs", "warn_stderr"]

# compute axis (`--x`) -> (point field, what it counts)
AXES = {"algorithmic": ("flops", "FLOPs, algorithmic"), "executed": ("flops_executed", "FLOPs, executed"),
        "seconds": ("seconds", "wall-clock seconds")}
_POINT_FIELDS = tuple(f for f, _ in AXES.values())
MAX_COMPUTE = 1e30  # FLOPs or seconds: beyond any run (and beyond what a log axis can pad without overflow)
_MAX_CONFIG_ENTRIES = 100_000  # a run's config has a few hundred
# yaml.safe_load's loader, in C when PyYAML has libyaml (20x faster: 10,000 configs read in seconds)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnreadableRun(ValueError):
    """A run folder whose files cannot be read as a finished run; the message names file and reason."""


@dataclass
class Run:
    """One finished run, checked: what the tables and figures read, and nothing else."""

    run_dir: Path
    learner: str
    learner_config: dict[str, Any]
    scenario: str
    stream: str
    tasks: tuple[str, ...]  # the tasks its final error averages over (those that finished), in order
    seed: int | None
    measure: str  # the budget's compute measure: algorithmic | executed
    budget_kind: str  # "flops" (budget.flops_per_task) or "steps" (train.max_steps)
    budget_value: float
    point: dict[str, float]  # flops / flops_executed / seconds (those known) and error
    point_without_search: dict[str, float]  # the same x without the search trials' compute
    x_kinds: str  # the compute kinds its point sums (`budget.x`): train+search | train | train+eval | ...
    sub_points: dict[str, dict[str, float]]  # objects / ood -> point
    anytime: dict[str, list[dict[str, float]]]  # "all" / objects / ood -> anytime curve (transfer runs)
    auc: float | None
    task_rows: list[dict[str, Any]]  # per finished task: task, domain, test_error, train_flops
    config: dict[str, Any] = field(repr=False)  # config.yaml, flattened to dotted keys
    metrics: dict[str, float] = field(default_factory=dict)  # "<metric>/<scalar>" -> value: the metrics' numbers it has
    label: str = ""  # the configuration it belongs to (set by labels.label_runs)
    study: str = ""  # the set of runs it is comparable with (set by labels.label_runs)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)  # summary.json as read: the report's details

    @property
    def budget(self) -> str:
        if self.budget_kind == "flops":
            return f"{self.budget_value:.3g} FLOPs/task"
        return f"{self.budget_value:g} steps/task" if self.budget_value else "-"

    def x(self, axis: str | None = None) -> float | None:
        """The run's compute on `axis` (an AXES key; None: its budget's measure)."""
        return self.point.get(AXES[axis or self.measure][0])

    @property
    def error(self) -> float:
        return self.point["error"]


def _one_line(text: str, limit: int = 160) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_text(path: Path) -> str:
    try:
        return read_text(path)
    except UnreadableText as exc:
        raise UnreadableRun(_one_line(str(exc), 400)) from None


def _load_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json through the run folder's own reader (`ResultsStore.read_summary`)."""
    try:
        return ResultsStore(run_dir, writer=False).read_summary()
    except DataError as exc:
        raise UnreadableRun(_one_line(str(exc), 400)) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UnreadableRun(f"{run_dir / layout.SUMMARY}: not JSON ({_one_line(str(exc), 100)})") from None


def _load_config(path: Path) -> dict[str, Any]:
    if not path.exists():  # hand-made or older run folders: the summary alone is enough
        return {}
    text = _read_text(path)
    try:
        config = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader: no !!python tags)
    except yaml.YAMLError as exc:
        raise UnreadableRun(f"{path}: not plain YAML ({_one_line(str(exc), 100)})") from None
    except RecursionError:
        raise UnreadableRun(f"{path}: nested too deep to be a run config") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UnreadableRun(f"{path}: not a run config ({_one_line(str(exc), 100)})") from None
    if not isinstance(config, dict):
        raise UnreadableRun(f"{path}: not a run config (a YAML {type(config).__name__}, not a mapping)")
    if _entries(config) > _MAX_CONFIG_ENTRIES:
        raise UnreadableRun(f"{path}: more than {_MAX_CONFIG_ENTRIES} entries (YAML aliases expanding?), not a run config")
    return flatten({k: v for k, v in config.items() if k != "learner"})


def _entries(node: Any) -> int:
    """Mapping entries under `node`, counted up to just past the limit (aliases can make a small
    file expand exponentially: counting stops before walking all of it)."""
    count, stack = 0, [node]
    while stack and count <= _MAX_CONFIG_ENTRIES:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _number(value: Any, what: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnreadableRun(f"{what} is {_one_line(repr(value), 40)}, not a number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not (finite and low <= value <= high):
        raise UnreadableRun(f"{what} is {_one_line(repr(value), 40)}, not a finite number in [{low:g}, {high:g}]")
    return float(value)


def _mapping(value: Any, what: str, *, optional: bool = True) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise UnreadableRun(f"{what} is {_one_line(repr(value), 40)}, not a mapping")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UnreadableRun(f"{what} is {_one_line(repr(value), 40)}, not a name")
    return value


def _point(given: Any, what: str, tasks: list[dict[str, Any]], error: float | None, *, x: str = DEFAULT_X) -> dict[str, float]:
    """A checked point: the one given, else `run_point` over `tasks` summing the compute kinds `x`
    (empty when neither has one)."""
    if given is None:
        given = run_point(tasks, error, x=x) if tasks and error is not None else None
        if given is None:
            return {}
    given = _mapping(given, what)
    if x != "train" and "error" not in given:
        raise UnreadableRun(f"{what} has no error")
    point = {k: _number(given[k], f"{what}.{k}", high=MAX_COMPUTE) for k in _POINT_FIELDS if given.get(k) is not None}
    if "flops" not in point:
        raise UnreadableRun(f"{what} has no flops")
    if "error" in given:
        point["error"] = _number(given["error"], f"{what}.error", high=1.0)
    return point


def _task(record: Any, number: int) -> dict[str, Any]:
    """A checked task line (the fields the point and the tables use)."""
    what = f"tasks[{number}]"
    record = _mapping(record, what, optional=False)
    status = record.get("status", "ok")
    if status != "ok":
        return {"task": str(record.get("task")), "status": "failed"}
    checked = {"task": _text(record.get("task"), f"{what}.task"), "status": "ok",
               "domain": _text(record.get("domain", "unknown"), f"{what}.domain"),
               "test_error": _number(record.get("test_error"), f"{what}.test_error", high=1.0)}
    if record.get("flops") is not None:  # the compute run_point sums when the summary has no point
        flops = _mapping(record["flops"], f"{what}.flops")
        compute: dict[str, Any] = {"train": _number(flops.get("train"), f"{what}.flops.train"),
                                   "search": _number(flops.get("search", 0.0), f"{what}.flops.search"),
                                   "eval": _number(flops.get("eval", 0.0), f"{what}.flops.eval")}
        for key in ("executed", "seconds"):
            compute[key] = {name: _number(value, f"{what}.flops.{key}.{name}")
                            for name, value in _mapping(flops.get(key), f"{what}.flops.{key}").items()}
        checked["flops"] = compute
    return checked


def _curve(value: Any, what: str) -> list[dict[str, float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnreadableRun(f"{what} is not a list")
    curve = []
    for k, point in enumerate(value):
        point = _mapping(point, f"{what}[{k}]", optional=False)
        curve.append({key: _number(point[key], f"{what}[{k}].{key}", high=1.0 if key == "mean_error" else MAX_COMPUTE)
                      for key in (*_POINT_FIELDS, "mean_error") if point.get(key) is not None})
        if not {"flops", "mean_error"} <= curve[-1].keys():
            raise UnreadableRun(f"{what}[{k}] lacks flops or mean_error")
    return curve


def _budget(summary: dict[str, Any], config: dict[str, Any]) -> tuple[str, float, str]:
    budget = _mapping(summary.get("budget"), "budget")
    measure = budget.get("measure") or "algorithmic"
    if measure not in ("algorithmic", "executed"):
        raise UnreadableRun(f"budget.measure is {_one_line(repr(measure), 40)}; valid: algorithmic, executed")
    if budget.get("flops_per_task") is not None:
        return "flops", _number(budget["flops_per_task"], "budget.flops_per_task", high=MAX_COMPUTE), measure
    steps = config.get("train.max_steps")
    return "steps", (_number(steps, "config train.max_steps") if steps is not None else 0.0), measure


def _x_kinds(summary: dict[str, Any]) -> str:
    """The compute kinds the run's point sums: the point's own `x`, else its budget's `x` (runs
    before `budget.x`: `includes_search` / `budget.count_search`; both absent: training + search)."""
    point, budget = _mapping(summary.get("point"), "point"), _mapping(summary.get("budget"), "budget")
    x = point.get("x", budget.get("x"))
    if x is None:
        search = point.get("includes_search", budget.get("count_search", True))
        x = DEFAULT_X if search is not False else "train"
    if x not in X_CHOICES:
        raise UnreadableRun(f"point.x is {_one_line(repr(x), 40)}; valid: {', '.join(X_CHOICES)}")
    return str(x)


def _scores(summary: dict[str, Any], tasks: list[dict[str, Any]], x: str) -> tuple[dict, dict, dict, dict]:
    """point, point without search, sub-stream points, anytime curves."""
    final = summary.get("final_mean_error", summary.get("mean_test_error"))
    final = None if final is None else _number(final, "final_mean_error", high=1.0)
    point = _point(summary.get("point"), "point", tasks, final, x=x)
    if not point:
        raise UnreadableRun("it has no point and no final error (did every task fail?)")
    bare = _point(summary.get("point_without_search"), "point_without_search", tasks, point["error"], x="train")
    subs, anytime = {}, {"all": _curve(summary.get("anytime_curve"), "anytime_curve")}
    given = _mapping(summary.get("sub_streams"), "sub_streams")
    for name, group in sub_streams(tasks).items():
        scores = _mapping(given.get(name), f"sub_streams.{name}")
        error = scores.get("final_mean_error")
        error = None if error is None else _number(error, f"sub_streams.{name}.final_mean_error", high=1.0)
        subs[name] = _point(scores.get("point"), f"sub_streams.{name}.point", group, error, x=x)
        anytime[name] = _curve(scores.get("anytime_curve"), f"sub_streams.{name}.anytime_curve")
    return point, bare, {k: v for k, v in subs.items() if v}, {k: v for k, v in anytime.items() if v}


def _metric_values(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers the metrics name (`StreamMetric.scalars`) that the summary has, as `<metric>/<scalar>`."""
    values = {}
    for metric in METRICS:
        for scalar in metric.scalars:
            value = _mapping(summary.get(metric.name), metric.name).get(scalar)
            if value is not None:  # within the range the metric declares (accuracies: [-1, 1])
                low, high = metric.bounds
                values[f"{metric.name}/{scalar}"] = _number(value, f"{metric.name}.{scalar}", low=low, high=high)
    return values


def _run(run_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> Run:
    if not isinstance(summary["tasks"], list):  # read_summary made sure it is there
        raise UnreadableRun("tasks is not a list")
    records = [_task(t, i) for i, t in enumerate(summary["tasks"])]
    tasks = [t for t in records if t["status"] == "ok"]
    seed = summary.get("seed", config.get("seed"))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UnreadableRun(f"seed is {_one_line(repr(seed), 40)}, not an integer")
    kind, value, measure = _budget(summary, config)
    x_kinds = _x_kinds(summary)
    point, bare, subs, anytime = _scores(summary, tasks, x_kinds)
    backbone = summary.get("backbone")  # the architecture that ran ({name, ...}; a plain name in older runs)
    name = backbone.get("name") if isinstance(backbone, dict) else backbone
    if name is not None and config:  # what ran names the configuration, also when a learner brought its own network
        config = {**config, "backbone.name": _text(name, "backbone.name")}
    auc = summary.get("auc")
    return Run(run_dir=run_dir, learner=_text(summary.get("learner"), "learner"),
               learner_config=_mapping(summary.get("learner_config"), "learner_config"),
               scenario=_text(summary.get("scenario", config.get("scenario", "transfer")), "scenario"),
               stream=_text(summary.get("stream"), "stream"), tasks=tuple(t["task"] for t in tasks), seed=seed,
               measure=measure, budget_kind=kind, budget_value=value, point=point, point_without_search=bare, x_kinds=x_kinds,
               sub_points=subs, anytime=anytime, auc=None if auc is None else _number(auc, "auc", high=1.0),
               task_rows=[{"task": t["task"], "domain": t["domain"], "test_error": t["test_error"],
                           "train_flops": float((t.get("flops") or {}).get("train", 0.0))} for t in tasks],
               config=config, metrics=_metric_values(summary), summary=summary)


def read_run(run_dir: str | Path) -> Run:
    """The finished run in `run_dir`, checked; `UnreadableRun` (naming the file and why) if not."""
    run_dir = Path(run_dir)
    summary_path, config_path = run_dir / layout.SUMMARY, run_dir / layout.CONFIG
    summary = _load_summary(run_dir)
    config = _load_config(config_path)
    try:
        return _run(run_dir, summary, config)
    except UnreadableRun as exc:
        raise UnreadableRun(f"{summary_path}: {exc}") from None
    except RecursionError:
        raise UnreadableRun(f"{summary_path}: nested too deep to be a run summary") from None
    except (TypeError, KeyError, AttributeError, OverflowError) as exc:  # a shape no check above foresaw
        raise UnreadableRun(f"{summary_path}: unexpected shape ({type(exc).__name__}: {_one_line(str(exc), 80)})") from None


def run_dirs(path: str | Path) -> list[Path]:
    """The run folders under `path`: a run folder, a folder of runs or a sweep folder (its runs/).
    A folder that holds a summary.json counts, readable or not (the reader then says why not)."""
    path = Path(path)
    if (path / layout.SUMMARY).exists():
        return [path]
    for folder in (path, path / layout.SWEEP_RUNS):  # a folder of runs, or a sweep folder (its runs/)
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if (p / layout.SUMMARY).exists())
            if found:
                return found
    raise ConfigError(f"'{path}' holds no finished run: no summary.json in it, in its sub-folders or in its runs/ "
                      "folder (pass run folders, sweep folders or folders of runs)")


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def load_runs(paths: list[str | Path], *, warn: Callable[[str], None] = warn_stderr) -> list[Run]:
    """The readable finished runs under `paths` (run, sweep or runs folders), each folder once; each
    unreadable one, and each path without a finished run, skipped with one `warn` line. An error if
    none is left to compare."""
    if not paths:
        raise ConfigError("No folders given: pass run folders or sweep folders, e.g. sweeps/demo or runs/*")
    folders: dict[Path, Path] = {}  # resolved -> as given
    missing: list[ConfigError] = []
    for path in paths:
        try:
            found = run_dirs(path)
        except ConfigError as exc:  # e.g. an unfinished run in runs/*: warned of, unless nothing else is left
            missing.append(exc)
            continue
        for folder in found:
            folders.setdefault(folder.resolve(), folder)
    if not folders:
        raise missing[0]
    for error in missing:
        warn(f"skipped {error}")
    runs = []
    for folder in folders.values():
        try:
            runs.append(read_run(folder))
        except UnreadableRun as exc:
            warn(f"skipped {exc}")
    if not runs:
        raise ConfigError(f"None of the {len(folders)} run folder(s) given could be read (see the warnings above)")
    return runs
