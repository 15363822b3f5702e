"""Grouping and naming runs: the one labeller `compare`, `plot`, the sweep and the notebook share.

- **Study**: the runs a figure panel or a table block may put side by side. Runs are comparable
  only over the same tasks (the stream and the tasks their final error averages over, so a
  different `stream.tasks`, or a task that failed, is another study), the same scenario, the same
  kind of budget (`budget.flops_per_task` or `train.max_steps`), the same compute measure and the
  same compute on the x axis (`budget.x`: training + search, training only, ... + evaluation).
- **Configuration** (`Run.label`): the learner option, its settings that differ from the option's
  YAML file or between the runs, and any other config key that differs between the runs; seed,
  names, paths, and what places a run (its study, its budget on the x axis) aside. Runs of one
  configuration and one budget are the seeds of one point; its budgets are the points of one curve.

Linear in the number of runs times their config keys (1,000 runs label in milliseconds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from nevisbench.analysis.runs import Run, load_runs, warn_stderr
from nevisbench.config import config_dir

__all__ = ["collect", "label_runs", "study_key"]

# config keys that never make two runs different configurations
_NOT_A_SETTING = ("seed", "run_name", "out_dir", "resume", "logger.", "trainer.progress_bar", "trainer.log_every_n_steps",
                  "choices.logger", "data.root", "train.checkpoint_every_n_steps")
# config keys that place a run (in its study, or on the x axis) rather than name its configuration
_PLACES = ("scenario", "stream.", "choices.stream", "choices.learner", "budget.flops_per_task", "train.max_steps",
           "budget.measure", "budget.x", "budget.count_search")


def study_key(run: Run) -> tuple[Any, ...]:
    """What two runs must share to be compared (see the module docstring)."""
    return run.stream, run.tasks, run.scenario, run.budget_kind, run.measure, run.x_kinds


@cache
def _learner_defaults(learner: str) -> dict[str, Any]:
    path = config_dir() / "learner" / f"{learner}.yaml"
    try:
        defaults = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        defaults = {}
    return defaults if isinstance(defaults, dict) else {}


def _varying(settings: list[dict[str, Any]]) -> set[str]:
    """Keys whose value differs between the mappings (a key missing from some counts as differing)."""
    seen: dict[str, set[str]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for mapping in settings:
        for key, value in mapping.items():
            seen[key].add(repr(value))
            count[key] += 1
    return {k for k, values in seen.items() if len(values) > 1 or count[k] < len(settings)}


def _learner_settings(group: list[Run]) -> list[str]:
    """The learner settings worth naming for one learner's runs: those that vary or leave the YAML."""
    defaults = _learner_defaults(group[0].learner)
    configs = [{k: v for k, v in r.learner_config.items() if k != "name"} for r in group]
    varying = _varying(configs)
    off_default = {k for c in configs for k, v in c.items() if k in defaults and v != defaults[k]}
    return sorted(varying | off_default)


def _name_studies(runs: list[Run], warn: Callable[[str], None]) -> None:
    task_sets: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    kinds: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for run in runs:
        task_sets[run.stream].add(run.tasks)
        kinds[run.stream, run.tasks].add(f"{run.budget_kind}/{run.measure}/{run.x_kinds}")
    for stream, sets in sorted(task_sets.items()):
        if len(sets) > 1:
            warn(f"runs of stream '{stream}' cover {len(sets)} different task sets (stream.tasks, or failed tasks): "
                 "they are not comparable and are kept apart (one study each), never averaged or joined")
    for (stream, _), seen in sorted(kinds.items()):
        if len(seen) > 1:
            warn(f"runs of stream '{stream}' use different budgets, measures or x axes ({', '.join(sorted(seen))}): "
                 "they are kept apart (one study each)")
    for run in runs:
        parts = [run.stream]
        if len(task_sets[run.stream]) > 1:
            shown = ", ".join(run.tasks[:4]) + (f", ... ({len(run.tasks)} tasks)" if len(run.tasks) > 4 else "")
            parts.append(f"[{shown}]")
        if len(kinds[run.stream, run.tasks]) > 1:
            parts.append(f"({run.budget_kind} budget, {run.measure}, x = {run.x_kinds})")
        run.study = " ".join(parts)


def label_runs(runs: list[Run], *, warn: Callable[[str], None] | None = None) -> list[Run]:
    """Set each run's `label` (its configuration) and `study` (what it is comparable with); warn
    once per stream whose runs are not all comparable. Returns `runs`."""
    _name_studies(runs, warn or (lambda message: None))
    differing = _varying([r.config for r in runs if r.config])  # a run folder without config.yaml names none
    others = sorted(k for k in differing if not k.startswith(_NOT_A_SETTING) and not k.startswith(_PLACES))
    by_learner: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_learner[run.learner].append(run)
    for learner, group in by_learner.items():
        shown = _learner_settings(group)
        for run in group:
            settings = [f"{k}={run.learner_config.get(k)}" for k in shown]
            settings += [f"{k}={run.config.get(k)}" for k in others]
            run.label = learner + (f" ({', '.join(settings)})" if settings else "")
    return runs


def collect(paths: list[str | Path], *, warn: Callable[[str], None] = warn_stderr) -> list[Run]:
    """The readable finished runs under `paths` (run, sweep or runs folders), labelled; each
    unreadable run and each set of runs that is not comparable with the rest warned of once."""
    return label_runs(load_runs(paths, warn=warn), warn=warn)
