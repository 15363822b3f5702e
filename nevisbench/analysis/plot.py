"""Compute-performance figures across runs (`nevisbench plot`): every run's curve, the Pareto
front across runs, and one panel per sub-stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nevisbench.errors import ConfigError

__all__ = ["AXES", "load_runs", "run_label", "pareto_front", "plot_runs"]

# --x option -> (curve point field, axis label)
AXES = {
    "algorithmic": ("flops", "training FLOPs, algorithmic (sparsity-aware)"),
    "executed": ("flops_executed", "training FLOPs, executed"),
    "seconds": ("seconds", "training wall-clock seconds"),
}


def load_runs(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """The summaries of finished runs; a folder without summary.json is a clear error."""
    runs = []
    for run_dir in map(Path, run_dirs):
        path = run_dir / "summary.json"
        if not path.is_file():
            raise ConfigError(f"'{run_dir}' is not a finished run: it has no summary.json")
        summary = json.loads(path.read_text())
        summary["_dir"] = str(run_dir)
        runs.append(summary)
    if not runs:
        raise ConfigError("No run folders given: pass one or more run directories, e.g. runs/*")
    return runs


def run_label(summary: dict[str, Any]) -> str:
    """`conv_prune (sparsity=0.5, continual)`: the learner option and its key settings."""
    settings = [f"{k}={v}" for k, v in sorted((summary.get("learner_config") or {}).items()) if k != "name"]
    if summary.get("scenario") == "continual":
        settings.append("continual")
    budget = (summary.get("budget") or {}).get("flops_per_task")
    if budget:
        settings.append(f"budget={budget:.2g}")
    return summary["learner"] + (f" ({', '.join(settings)})" if settings else "")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by any point with less or equal compute and lower error."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _panel(ax: Any, curves: list[tuple[str, list[dict[str, float]]]], field: str, title: str, xlabel: str) -> None:
    points = []
    for label, curve in curves:
        xs = [p[field] for p in curve]
        ys = [p["mean_error"] for p in curve]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
        points += list(zip(xs, ys))
    front = pareto_front(points)
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=2.2, alpha=0.7, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean dev error over tasks")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def plot_runs(run_dirs: list[str | Path], out: str | Path, *, x: str = "algorithmic") -> Path:
    """Write one figure (PNG/PDF/SVG by suffix) comparing the runs' compute-performance curves."""
    if x not in AXES:
        raise ConfigError(f"Unknown compute axis '{x}'. Valid: {', '.join(AXES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(run_dirs)
    field, xlabel = AXES[x]
    groups = sorted({g for r in runs for g in (r.get("sub_streams") or {})})
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(6.5 * (1 + len(groups)), 4.8), squeeze=False)
    streams = ", ".join(sorted({r["stream"] for r in runs}))
    _panel(axes[0][0], [(run_label(r), r.get("curve") or []) for r in runs], field, f"stream: {streams}", xlabel)
    for ax, group in zip(axes[0][1:], groups):
        curves = [(run_label(r), r["sub_streams"][group]["curve"]) for r in runs if group in (r.get("sub_streams") or {})]
        _panel(ax, curves, field, f"sub-stream: {group}", xlabel)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
