"""Compute-performance figures across runs (`nevisbench plot`): a curve per learner configuration
through its finished budget runs, the Pareto front across runs, each run's anytime curve (dashed),
and one panel per sub-stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nevisbench.errors import ConfigError

__all__ = ["AXES", "load_runs", "run_label", "config_label", "backbone_name", "learner_curves", "pareto_front", "plot_runs"]

# --x option -> (point / anytime-curve field, axis label)
AXES = {
    "algorithmic": ("flops", "training + search FLOPs, algorithmic (sparsity-aware)"),
    "executed": ("flops_executed", "training + search FLOPs, executed"),
    "seconds": ("seconds", "training + search wall-clock seconds"),
}
FORMATS = (".png", ".pdf", ".svg")


def load_runs(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """The summaries of finished runs; a folder without summary.json is a clear error."""
    runs = []
    for run_dir in map(Path, run_dirs):
        path = run_dir / "summary.json"
        if not path.is_file():
            raise ConfigError(f"'{run_dir}' is not a finished run: it has no summary.json")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"'{path}' is not a readable run summary ({exc})") from None
        if not isinstance(summary, dict) or not {"learner", "stream", "tasks"} <= summary.keys():
            raise ConfigError(f"'{path}' is not a nevisbench run summary (learner, stream, tasks missing)")
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


def backbone_name(summary: dict[str, Any]) -> str:
    """The architecture a run ran: `backbone.name` of its summary (a plain name in older summaries)."""
    backbone = summary.get("backbone")
    return str(backbone.get("name") if isinstance(backbone, dict) else backbone or "?")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by any point with less or equal compute and lower error."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def config_label(summary: dict[str, Any], varying: set[str] | None = None) -> str:
    """The learner configuration a run belongs to: its label without the budget (runs of one
    configuration at several budgets form one curve). With `varying`, only those settings (and the
    sparsity) are named, so a figure's legend shows what tells its curves apart."""
    config = summary.get("learner_config") or {}
    keep = (lambda k: True) if varying is None else (lambda k: k in varying or k == "sparsity")
    settings = [f"{k}={v}" for k, v in sorted(config.items()) if k != "name" and keep(k)]
    if summary.get("scenario") == "continual":
        settings.append("continual")
    return summary["learner"] + (f" ({', '.join(settings)})" if settings else "")


def _varying_settings(runs: list[dict[str, Any]]) -> set[str]:
    """Learner settings whose value differs between runs of the same learner."""
    values: dict[tuple[str, str], set[str]] = {}
    for summary in runs:
        for key, value in (summary.get("learner_config") or {}).items():
            values.setdefault((summary["learner"], key), set()).add(repr(value))
    return {key for (_, key), seen in values.items() if len(seen) > 1}


def _scores_of(summary: dict[str, Any], group: str | None) -> dict[str, Any] | None:
    return summary if group is None else (summary.get("sub_streams") or {}).get(group)


def learner_curves(runs: list[dict[str, Any]], group: str | None, field: str = "flops") -> tuple[
        dict[str, list[tuple[float, float]]], dict[str, list[list[dict[str, float]]]]]:
    """Per learner configuration: its runs' (compute, final error) points in compute order, and its
    runs' anytime curves (transfer runs only), for the stream (`group=None`) or a sub-stream."""
    varying = _varying_settings(runs)
    several_backbones = len({backbone_name(s) for s in runs}) > 1  # then each curve names its backbone
    configs: dict[str, list[tuple[float, float]]] = {}
    anytime: dict[str, list[list[dict[str, float]]]] = {}
    for summary in runs:
        scores = _scores_of(summary, group)
        if not scores:
            continue
        label = config_label(summary, varying) + (f" [{backbone_name(summary)}]" if several_backbones else "")
        point = scores.get("point")
        if point:
            configs.setdefault(label, []).append((point[field], point["error"]))
        if scores.get("anytime_curve"):
            anytime.setdefault(label, []).append(scores["anytime_curve"])
    return {label: sorted(points) for label, points in configs.items()}, anytime


def _panel(ax: Any, runs: list[dict[str, Any]], group: str | None, field: str, title: str, xlabel: str) -> None:
    """Per configuration: a solid curve through its runs' (compute, final error) points; the Pareto
    front over every point; and each transfer run's anytime curve, dashed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    configs, anytime = learner_curves(runs, group, field)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    everything = []
    for i, label in enumerate(sorted(set(configs) | set(anytime))):
        colour = colours[i % len(colours)]
        points = sorted(configs.get(label, []))
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=5, linewidth=2, color=colour, label=label)
            everything += points
        for k, curve in enumerate(anytime.get(label, [])):
            ax.plot([p[field] for p in curve], [p["mean_error"] for p in curve], linestyle="--", linewidth=1,
                    alpha=0.6, color=colour, label=f"anytime (mid-schedule): {label}" if k == 0 else None)
    front = pareto_front(everything)
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="black", linewidth=3, alpha=0.35, label="Pareto front (finished runs)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final mean test error (anytime: mean dev error)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def plot_runs(run_dirs: list[str | Path], out: str | Path, *, x: str = "algorithmic") -> Path:
    """Write one figure (PNG/PDF/SVG by suffix): each learner configuration's curve through its
    budget runs, the Pareto front, the anytime curves dashed; one panel per sub-stream."""
    if x not in AXES:
        raise ConfigError(f"Unknown compute axis '{x}'. Valid: {', '.join(AXES)}")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"Cannot write a figure to '{out}': unknown format '{out.suffix}'. Valid: {', '.join(FORMATS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(run_dirs)
    field, xlabel = AXES[x]
    groups = sorted({g for r in runs for g in (r.get("sub_streams") or {})})
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(6.5 * (1 + len(groups)), 4.8), squeeze=False)
    streams = ", ".join(sorted({r["stream"] for r in runs}))
    backbones = ", ".join(sorted({backbone_name(r) for r in runs}))
    _panel(axes[0][0], runs, None, field, f"stream: {streams}; backbone: {backbones}", xlabel)
    for ax, group in zip(axes[0][1:], groups):
        _panel(ax, runs, group, field, f"sub-stream: {group}", xlabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(3, max(1, len(labels))), frameon=False)
    rows = -(-len(labels) // 3)
    fig.tight_layout(rect=(0, min(0.4, 0.06 * rows + 0.02), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
