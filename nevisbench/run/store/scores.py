"""Stream-level scores from per-task results lines.

- **The point** of a run: x = the stream's counted compute (by default training plus hyperparameter
  search, the papers' axis; `budget.x` names the kinds: `train`, `train+search`, `train+eval`,
  `train+search+eval`), y = the final mean test error. With `budget.flops_per_task=B` every task's schedule spans the
  steps B buys, so the run is one point of its learner's compute-performance curve; a learner's
  curve joins its runs across budgets, and the Pareto front over all runs is the frontier.
- **Final means**, as Nevis reports them: over single-label tasks (top-1 error), over multi-label
  tasks (1 - mAP), and combined; on `test`, and on `dev_test` where every task has it.
- **The anytime curve** (transfer scenario only): point k is the k-th milestone of every task (the
  same fraction of each task's planned compute), x = training compute summed over tasks, y = mean
  dev error (milestones that land on the same compute are merged into one point). It shows
  mid-schedule models, not models trained for that compute, and its x is training compute only
  (no search), so it is a secondary view. Its AUC is the mean error on a log10 axis over
  [auc_min_flops, the smaller of auc_max_flops and the run's last point] (`auc_range` states the
  range used: the last error is never held flat past the run's own compute): chance before the
  first point (the tasks' mean of 1 - 1/classes; 1.0 for a multi-label task), linear in
  log10(compute) between points.
  In the continual scenario task t starts from task t-1 trained to the end, so milestones of
  different tasks are not comparable states: no averaged anytime curve and no AUC are given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from nevisbench.config.schema import DEFAULT_X, X_CHOICES
from nevisbench.run.store.metric import MULTI_LABEL_METRIC

__all__ = ["Anytime", "CURVE_KEYS", "DEFAULT_X", "Scores", "X_CHOICES", "X_LABELS", "anytime_curve", "auc_range",
           "chance_error", "curve_auc", "run_point", "stream_scores", "sub_streams", "x_parts"]

# anytime curve point field -> the per-milestone record field it sums
CURVE_KEYS = {"flops": "train_flops", "flops_executed": "train_flops_executed", "seconds": "train_seconds"}
X_LABELS = {"train+search": "training + search", "train": "training only", "train+eval": "training + evaluation",
            "train+search+eval": "training + search + evaluation"}


def anytime_curve(tasks: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean dev error over tasks at matching milestones; compute summed over tasks; milestones at
    the same compute merged (their mean error)."""
    records = [t.get("anytime") or [] for t in tasks]
    if not records or not all(records):
        return []
    count = min(len(r) for r in records)
    curve = []
    for k in range(count):
        point = {key: float(sum(r[k].get(field, 0.0) for r in records)) for key, field in CURVE_KEYS.items()}
        point["mean_error"] = float(np.mean([r[k]["dev_error"] for r in records]))
        curve.append(point)
    for key in CURVE_KEYS:  # guard: compute never decreases along the curve
        for a, b in zip(curve, curve[1:], strict=False):
            b[key] = max(b[key], a[key])
    return _merge_repeats(curve)


def _merge_repeats(curve: list[dict[str, float]]) -> list[dict[str, float]]:
    """One point per compute: consecutive points at the same FLOPs become their mean error."""
    merged: list[list[dict[str, float]]] = []
    for point in curve:
        if merged and merged[-1][0]["flops"] == point["flops"]:
            merged[-1].append(point)
        else:
            merged.append([point])
    return [{**group[-1], "mean_error": float(np.mean([p["mean_error"] for p in group]))} for group in merged]


def chance_error(tasks: list[dict[str, Any]]) -> float:
    """The mean error of a chance predictor over the tasks: 1 - 1/classes for a single-label task,
    1.0 for a multi-label task or one whose class count is not recorded."""
    def chance(task: dict[str, Any]) -> float:
        classes = task.get("num_classes")
        if task.get("metric") == MULTI_LABEL_METRIC or not isinstance(classes, int) or classes < 1:
            return 1.0
        return 1.0 - 1.0 / classes
    return float(np.mean([chance(t) for t in tasks])) if tasks else 1.0


def auc_range(curve: list[dict[str, float]], lo: float, hi: float, *, x: str = "flops") -> list[float] | None:
    """The range the AUC covers: [lo, min(hi, the curve's last compute)], None if empty."""
    if not curve or not (0 < lo < hi):
        return None
    end = min(hi, curve[-1][x])
    return [lo, end] if end > lo else None


def curve_auc(curve: list[dict[str, float]], lo: float, hi: float, *, x: str = "flops",
              chance: float = 1.0) -> float | None:
    """Normalised area under error vs log10(x) over `auc_range` (see the module docstring)."""
    covered = auc_range(curve, lo, hi, x=x)
    if covered is None:
        return None
    xs = np.log10(np.maximum([p[x] for p in curve], 1e-300))
    ys = np.array([p["mean_error"] for p in curve])
    a, b = math.log10(covered[0]), math.log10(covered[1])

    def right_limit(u: float) -> float:
        return chance if u < xs[0] else float(np.interp(u, xs, ys))

    def left_limit(u: float) -> float:
        return chance if u <= xs[0] else float(np.interp(u, xs, ys))

    knots = sorted({a, b, *(float(v) for v in xs if a < v < b)})
    area = sum((u1 - u0) * (right_limit(u0) + left_limit(u1)) / 2 for u0, u1 in zip(knots, knots[1:], strict=False))
    return area / (b - a)


def sub_streams(tasks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`objects` (domain object) and `ood` (every other domain), when the stream has both."""
    groups = {"objects": [t for t in tasks if t["domain"] == "object"], "ood": [t for t in tasks if t["domain"] != "object"]}
    return groups if all(groups.values()) else {}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def x_parts(x: str) -> tuple[str, ...]:
    """The compute kinds a run's point sums on its x axis, from `budget.x` (`train+search` ->
    ("train", "search")); a ValueError naming the valid choices for anything else."""
    if x not in X_CHOICES:
        raise ValueError(f"budget.x={x!r} is not a compute axis; valid: {', '.join(X_CHOICES)}")
    return tuple(x.split("+"))


def run_point(tasks: list[dict[str, Any]], final_error: float | None, *, x: str = DEFAULT_X) -> dict[str, Any] | None:
    """The run's (compute, error) pair: x = the compute kinds `x` names (`budget.x`; by default
    training plus search, the papers' axis), by measure; error = final mean."""
    if final_error is None or not all("flops" in t for t in tasks):
        return None
    parts = x_parts(x)
    flops = [t["flops"] for t in tasks]
    executed = [f.get("executed", {}) for f in flops]
    seconds = [f.get("seconds", {}) for f in flops]
    return {
        "flops": float(sum(f.get(p, 0.0) for f in flops for p in parts)),  # algorithmic (the paper's measure)
        "flops_executed": float(sum(e.get(p, 0.0) for e in executed for p in parts)),
        "seconds": float(sum(s.get(p, 0.0) for s in seconds for p in parts)),
        "error": final_error,
        "x": x,
        "includes_search": "search" in parts,
    }


@dataclass
class Anytime:
    """The anytime curve, its AUC and the range the AUC covers (transfer scenario only)."""

    anytime_curve: list[dict[str, float]]
    auc: float | None
    auc_range: list[float] | None  # where the run's curve ends, if before auc_max_flops


@dataclass
class Scores:
    """The scores of a stream or a sub-stream (see the module docstring); `to_dict` is their JSON."""

    num_tasks: int
    final_mean_error: float | None  # combined: every task's test error (top-1 or 1 - mAP)
    final_mean_top1_error: float | None
    final_mean_map_error: float | None  # 1 - mAP, multi-label tasks
    dev_test_mean_error: float | None  # None unless every task has a dev_test split
    point: dict[str, Any] | None
    point_without_search: dict[str, Any] | None  # the compute of training only
    anytime: Anytime | None = None  # transfer only
    sub_streams: dict[str, Scores] | None = None  # the stream's own scores only: objects / ood

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("anytime", "sub_streams")}
        if self.anytime is not None:
            out.update(asdict(self.anytime))
        if self.sub_streams is not None:
            del out["num_tasks"]  # the summary's own
            out["sub_streams"] = {name: group.to_dict() for name, group in self.sub_streams.items()}
        return out


def _scores(tasks: list[dict[str, Any]], scenario: str, lo: float, hi: float, x: str = DEFAULT_X) -> Scores:
    single = [t["test_error"] for t in tasks if t.get("metric") != MULTI_LABEL_METRIC]
    multi = [t["test_error"] for t in tasks if t.get("metric") == MULTI_LABEL_METRIC]
    dev_test = [t.get("dev_test_error") for t in tasks]
    final = _mean(single + multi)
    anytime = None
    if scenario != "continual":
        curve = anytime_curve(tasks)
        anytime = Anytime(curve, curve_auc(curve, lo, hi, chance=chance_error(tasks)), auc_range(curve, lo, hi))
    return Scores(num_tasks=len(tasks), final_mean_error=final, final_mean_top1_error=_mean(single),
                  final_mean_map_error=_mean(multi),
                  dev_test_mean_error=_mean([float(v) for v in dev_test if v is not None]) if None not in dev_test else None,
                  point=run_point(tasks, final, x=x), point_without_search=run_point(tasks, final, x="train"),
                  anytime=anytime)


def stream_scores(tasks: list[dict[str, Any]], *, auc_min_flops: float, auc_max_flops: float,
                  scenario: str = "transfer", x: str = DEFAULT_X) -> Scores:
    """The scores of a summary: the point (its x the compute kinds `x` names, `budget.x`) and the
    point without search (training compute only), the final means, the anytime curve, its AUC and the
    range the AUC covers (`auc_range`; transfer only), and the same per sub-stream (`objects` / `ood`)."""
    scores = _scores(tasks, scenario, auc_min_flops, auc_max_flops, x)
    scores.sub_streams = {name: _scores(group, scenario, auc_min_flops, auc_max_flops, x)
                          for name, group in sub_streams(tasks).items()}
    return scores
