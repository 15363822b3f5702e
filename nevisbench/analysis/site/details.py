"""What a run page shows, taken from the run as the one reader read it (`Run`, and the summary.json it
kept: every task's results line). The reader checked what the table and the figure use; the rest
(compute breakdown, anytime records, revisits, search trials, learner reports, audits, provenance)
is read here leniently: a field of an unexpected shape is shown as absent, never trusted as a number.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from nevisbench.analysis.runs import Run

__all__ = ["KINDS", "MEASURES", "audits", "breakdown", "config_difference", "continual", "flagged", "learner_reports",
           "number", "provenance", "search_trials", "task_lines", "task_rows", "anytime_records"]

KINDS = ("train", "search", "eval", "outside")
MEASURES = ("algorithmic", "executed", "seconds")


def number(value: Any) -> float | None:
    """`value` as a finite float, else None (a string, a bool, NaN and the like are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def task_lines(run: Run) -> list[dict[str, Any]]:
    """The run's results lines (failed ones too), as its summary lists them."""
    tasks = run.summary.get("tasks")
    return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []


def _kind_value(flops: dict[str, Any], kind: str, measure: str) -> float | None:
    if kind == "outside":  # executed FLOPs counted outside the step windows (already in train)
        return number(flops.get("outside")) if measure == "algorithmic" else None
    if measure == "algorithmic":
        return number(flops.get(kind))
    return number(_dict(flops.get(measure)).get(kind))


def breakdown(flops: Any) -> dict[str, dict[str, float | None]]:
    """kind -> measure -> value, of a `flops` object (a task's, or the stream's tally)."""
    flops = _dict(flops)
    return {kind: {m: _kind_value(flops, kind, m) for m in MEASURES} for kind in KINDS}


def task_rows(run: Run) -> list[dict[str, Any]]:
    """Per task: its errors, steps, compute by kind and measure, wall time and audit."""
    rows = []
    for line in task_lines(run):
        audit = _dict(line.get("audit"))
        rows.append({"task": str(line.get("task")), "index": line.get("index"), "status": str(line.get("status", "ok")),
                     "domain": str(line.get("domain", "")), "metric": str(line.get("metric", "")),
                     "test_error": number(line.get("test_error")), "dev_test_error": number(line.get("dev_test_error")),
                     "dev_error": number(line.get("dev_error")), "steps": number(line.get("steps")),
                     "compute": breakdown(line.get("flops")), "wall_seconds": number(line.get("wall_seconds")),
                     "audit_ratio": number(audit.get("ratio")), "flagged": audit.get("flagged") is True,
                     "error": str(line.get("error") or "")})
    return rows


def anytime_records(run: Run) -> dict[str, list[tuple[float, float]]]:
    """task -> (training FLOPs so far in the task, dev error) at each milestone."""
    out = {}
    for line in task_lines(run):
        records = line["anytime"] if isinstance(line.get("anytime"), list) else []
        points = [(x, y) for r in records if (x := number(_dict(r).get("train_flops"))) is not None
                  and (y := number(_dict(r).get("dev_error"))) is not None]
        if points:
            out[str(line.get("task"))] = points
    return out


def continual(run: Run) -> dict[str, Any] | None:
    """The accuracy matrix (rows: after training task i; columns: task j) and its scores, when the
    run revisited earlier tasks (`scenario=continual eval.revisit=true`)."""
    section = _dict(run.summary.get("continual"))
    matrix, tasks = section.get("accuracy_matrix"), section.get("tasks")
    if not isinstance(matrix, list) or not isinstance(tasks, list) or len(matrix) != len(tasks):
        return None
    rows = [[number(v) for v in row] if isinstance(row, list) else [None] * len(tasks) for row in matrix]
    return {"tasks": [str(t) for t in tasks], "matrix": rows,
            **{k: number(section.get(k)) for k in ("average_accuracy", "backward_transfer", "forgetting")}}


def search_trials(run: Run) -> list[dict[str, Any]]:
    """Every task's search trials: task, trial, overrides, dev error, compute, status, winner."""
    out = []
    for line in task_lines(run):
        search = _dict(line.get("search"))
        for trial in search["trials"] if isinstance(search.get("trials"), list) else []:
            trial = _dict(trial)
            out.append({"task": str(line.get("task")), "trial": trial.get("trial"), "overrides": _dict(trial.get("overrides")),
                        "dev_error": number(trial.get("dev_error")), "train_flops": number(trial.get("train_flops")),
                        "eval_flops": number(trial.get("eval_flops")), "status": str(trial.get("status", "")),
                        "winner": trial.get("trial") == search.get("winner")})
    return out


def learner_reports(run: Run) -> list[tuple[str, dict[str, Any]]]:
    """(task, the learner's report on it) for the tasks whose line has one (e.g. learned_prune's structure)."""
    return [(str(line.get("task")), report) for line in task_lines(run)
            if isinstance(report := line.get("learner_report"), dict) and report]


def audits(run: Run) -> list[tuple[str, dict[str, Any]]]:
    """(task, the meter's time audit of it) for the tasks whose line has one."""
    return [(str(line.get("task")), audit) for line in task_lines(run) if isinstance(audit := line.get("audit"), dict)]


def flagged(run: Run) -> list[str]:
    """The tasks whose time audit was flagged (more time than the counted work explains)."""
    return [task for task, audit in audits(run) if audit.get("flagged") is True]


def provenance(run: Run) -> dict[str, Any]:
    """What ran it: nevisbench's version and commit, torch and Lightning, the device (as recorded in
    the summary's `provenance`; older runs: the trainer's config only), and the backbone."""
    recorded = _dict(run.summary.get("provenance"))
    out: dict[str, Any] = {k: v for k, v in recorded.items() if not isinstance(v, (dict, list))}
    out |= {f"{k}.{inner}": v for k, v in recorded.items() if isinstance(v, dict) for inner, v in v.items()}
    if not recorded:
        out["recorded"] = "not recorded (a run from before summary.json's provenance)"
    for key in ("trainer.accelerator", "trainer.devices", "trainer.precision"):
        if key in run.config:
            out.setdefault(key, run.config[key])
    backbone = run.summary.get("backbone")
    if isinstance(backbone, dict):
        out |= {f"backbone.{k}": v for k, v in backbone.items()}
    return out


def config_difference(runs: list[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """The config keys whose value differs between `runs` (a key some lack counts), and per run
    (in order) those keys' values: what sets each run apart from the study's others."""
    values: dict[str, set[str]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for run in runs:
        for key, value in run.config.items():
            values[key].add(repr(value))
            count[key] += 1
    keys = sorted(k for k, v in values.items() if len(v) > 1 or count[k] < len(runs))
    return keys, [{k: run.config.get(k) for k in keys} for run in runs]
