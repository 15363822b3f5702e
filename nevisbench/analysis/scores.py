"""Stream-level scores from per-task results: the compute-performance curve, its AUC, the final
mean error, and the same per sub-stream (objects vs the rest).

Curve: point k is the k-th anytime milestone of every task (the same fraction of each task's
planned training compute): x = training compute summed over tasks, y = mean dev error over tasks.
AUC: mean error over [min_flops, max_flops] on a log10 axis (so runs are comparable whatever they
spent): error is 1.0 before the curve's first point (no model yet), linear in log10(compute)
between points, and the last point's error after it (the learner's result stands). Lower is better.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CURVE_KEYS", "stream_curve", "curve_auc", "sub_streams", "stream_scores"]

# curve point field -> the per-milestone record field it sums
CURVE_KEYS = {"flops": "train_flops", "flops_executed": "train_flops_executed", "seconds": "train_seconds"}


def stream_curve(tasks: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean dev error over tasks at matching milestones; compute summed over tasks."""
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
        for a, b in zip(curve, curve[1:]):
            b[key] = max(b[key], a[key])
    return curve


def curve_auc(curve: list[dict[str, float]], lo: float, hi: float, *, x: str = "flops") -> float | None:
    """Normalised area under error vs log10(x) over [lo, hi] (see module docstring)."""
    if not curve or not (0 < lo < hi):
        return None
    xs = np.log10(np.maximum([p[x] for p in curve], 1e-300))
    ys = np.array([p["mean_error"] for p in curve])
    a, b = math.log10(lo), math.log10(hi)

    def right_limit(u: float) -> float:
        return 1.0 if u < xs[0] else float(np.interp(u, xs, ys))

    def left_limit(u: float) -> float:
        return 1.0 if u <= xs[0] else float(np.interp(u, xs, ys))

    knots = sorted({a, b, *(float(v) for v in xs if a < v < b)})
    area = sum((u1 - u0) * (right_limit(u0) + left_limit(u1)) / 2 for u0, u1 in zip(knots, knots[1:]))
    return area / (b - a)


def sub_streams(tasks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`objects` (domain object) and `ood` (every other domain), when the stream has both."""
    groups = {"objects": [t for t in tasks if t["domain"] == "object"], "ood": [t for t in tasks if t["domain"] != "object"]}
    return groups if all(groups.values()) else {}


def _scores(tasks: list[dict[str, Any]], lo: float, hi: float) -> dict[str, Any]:
    curve = stream_curve(tasks)
    errors = [t["test_error"] for t in tasks]
    return {
        "curve": curve,
        "auc": curve_auc(curve, lo, hi),
        "final_mean_error": float(np.mean(errors)) if errors else None,
        "num_tasks": len(tasks),
    }


def stream_scores(tasks: list[dict[str, Any]], *, auc_min_flops: float, auc_max_flops: float) -> dict[str, Any]:
    """`curve`, `auc`, `final_mean_error`, `auc_range` and `sub_streams` for a summary."""
    scores = _scores(tasks, auc_min_flops, auc_max_flops)
    scores.pop("num_tasks")
    scores["auc_range"] = [auc_min_flops, auc_max_flops]
    scores["sub_streams"] = {name: _scores(group, auc_min_flops, auc_max_flops) for name, group in sub_streams(tasks).items()}
    return scores
