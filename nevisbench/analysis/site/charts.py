"""The report's charts as Plotly figure specifications (plain dicts, drawn by the bundled plotly.js):
the compute-performance figure of a study, anytime curves, per-task bars and the accuracy matrix.

The compute-performance figure computes what the PNG figure does, with the same functions
(`figures.curves`, `figures.pareto_front`): per configuration, its seeds at each budget are one
point (the mean, a band of +- one sample std, the seeds as dots that name their run on hover), its
budgets joined in compute order, and the Pareto front over the means. Each trace carries
`meta.role` (mean, band, seeds, front, flagged) so a reader (or a test) can tell them apart.
"""

from __future__ import annotations

from typing import Any

from nevisbench.analysis.figures import curves, pareto_front
from nevisbench.analysis.runs import AXES, Run
from nevisbench.run.store.report import format_flops
from nevisbench.run.store.scores import X_LABELS

__all__ = ["PALETTE", "anytime_chart", "bars", "colours", "heatmap", "performance_chart", "task_chart", "axis_title"]

# matplotlib's tab10, so the report's colours read like the PNG figure's
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_SOLO_BAND = 1.12  # one budget: the band spans x / 1.12 .. x * 1.12, as in the PNG figure
_FONT = {"size": 12}


def colours(labels: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(labels))}


def axis_title(run: Run, axis: str | None = None) -> str:
    return f"compute: {AXES[axis or run.measure][1]}, {X_LABELS.get(run.x_kinds, run.x_kinds)} (log)"


def _compute(value: float, axis: str) -> str:
    return f"{value:.3g} s" if axis == "seconds" else format_flops(value)


def _point(run: Run, part: str) -> tuple[float, float] | None:
    point = run.point if part == "all" else run.sub_points.get(part, {})
    x, y = point.get(AXES[run.measure][0]), point.get("error")
    return None if x is None or y is None else (x, y)


def _hover(run: Run, x: float, y: float, axis: str) -> str:
    return (f"run: {run.run_dir.name}<br>configuration: {run.label}<br>seed: {run.seed}<br>budget: {run.budget}"
            f"<br>compute: {_compute(x, axis)}<br>error: {y:.4f}")


def _band(x: list[float], mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    if len(x) == 1:
        x = [x[0] / _SOLO_BAND, x[0] * _SOLO_BAND]
        mean, std = mean * 2, std * 2
    return x + x[::-1], [m + s for m, s in zip(mean, std, strict=True)] + [m - s for m, s in zip(mean, std, strict=True)][::-1]


def _label_traces(label: str, points: list[tuple[float, float, float, int]], colour: str, axis: str) -> list[dict[str, Any]]:
    x, mean, std, seeds = (list(v) for v in zip(*points, strict=True))
    band_x, band_y = _band(x, mean, std)
    hover = [f"{label}<br>{n} seed(s): error {m:.4f} &plusmn; {s:.4f}<br>mean compute: {_compute(v, axis)}"
             for v, m, s, n in zip(x, mean, std, seeds, strict=True)]
    return [{"type": "scatter", "x": band_x, "y": band_y, "fill": "toself", "fillcolor": colour, "opacity": 0.18,
             "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, "legendgroup": label, "mode": "lines",
             "meta": {"role": "band", "label": label}},
            {"type": "scatter", "x": x, "y": mean, "mode": "lines+markers", "name": label, "legendgroup": label,
             "line": {"color": colour, "width": 2}, "marker": {"size": 7}, "hovertext": hover,
             "hovertemplate": "%{hovertext}<extra></extra>", "meta": {"role": "mean", "label": label}}]


def performance_chart(runs: list[Run], part: str, pages: dict[int, str], title: str) -> dict[str, Any]:
    """One study's compute-performance figure (sub-stream `part`, or "all"); `pages`: id(run) ->
    the run page's link, followed on a click on its dot."""
    axis = runs[0].measure
    palette = colours(list({r.label for r in runs}))
    traces: list[dict[str, Any]] = []
    means = []
    drawn = curves(runs, part)
    for label in sorted(drawn):
        traces += _label_traces(label, drawn[label], palette[label], axis)
        means += [(p[0], p[1]) for p in drawn[label]]
    flagged: list[tuple[float, float, str]] = []
    for label in sorted(drawn):
        group = [(r, xy) for r in runs if r.label == label and (xy := _point(r, part)) is not None]
        traces.append({"type": "scatter", "mode": "markers", "x": [xy[0] for _, xy in group], "y": [xy[1] for _, xy in group],
                       "marker": {"color": palette[label], "size": 6, "opacity": 0.6}, "showlegend": False,
                       "legendgroup": label, "name": label, "hovertext": [_hover(r, *xy, axis) for r, xy in group],
                       "hovertemplate": "%{hovertext}<extra></extra>", "customdata": [pages.get(id(r), "") for r, _ in group],
                       "meta": {"role": "seeds", "label": label}})
        flagged += [(*xy, r.run_dir.name) for r, xy in group if _flagged(r)]
    front = pareto_front(means)
    if len(front) >= 2:
        traces.append({"type": "scatter", "mode": "lines", "x": [p[0] for p in front], "y": [p[1] for p in front],
                       "line": {"color": "black", "dash": "dash", "shape": "hv", "width": 1.5}, "name": "Pareto front",
                       "hoverinfo": "skip", "meta": {"role": "front"}})
    if flagged:
        traces.append({"type": "scatter", "mode": "markers", "x": [f[0] for f in flagged], "y": [f[1] for f in flagged],
                       "marker": {"symbol": "x-open", "size": 14, "color": "#d62728", "line": {"width": 2}},
                       "name": "time audit flagged", "hovertext": [f"audit flagged: {f[2]}" for f in flagged],
                       "hovertemplate": "%{hovertext}<extra></extra>", "meta": {"role": "flagged"}})
    return {"data": traces, "layout": _layout(title, axis_title(runs[0]), "final mean test error")}


def _flagged(run: Run) -> bool:
    lines = run.summary.get("tasks")
    return isinstance(lines, list) and any(isinstance(t, dict) and isinstance(t.get("audit"), dict)
                                           and t["audit"].get("flagged") is True for t in lines)


def _layout(title: str, x: str, y: str, *, log_x: bool = True) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 14}}, "font": _FONT, "hovermode": "closest",
            "xaxis": {"title": {"text": x}, "type": "log" if log_x else "linear", "gridcolor": "#e5e5e5"},
            "yaxis": {"title": {"text": y}, "gridcolor": "#e5e5e5"}, "plot_bgcolor": "white",
            "margin": {"l": 60, "r": 20, "t": 50, "b": 60}, "legend": {"orientation": "h", "y": -0.25}}


def anytime_chart(series: dict[str, list[tuple[float, float]]], title: str, x: str, y: str,
                  palette: dict[str, str] | None = None) -> dict[str, Any]:
    """Curves by name (each a list of (x, y)); a name's curves joined into one trace, apart by gaps,
    so a study of 1,000 runs draws one trace per configuration."""
    traces = []
    for i, (name, points) in enumerate(series.items()):
        colour = (palette or {}).get(name, PALETTE[i % len(PALETTE)])
        traces.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": [p[0] for p in points],
                       "y": [p[1] for p in points], "connectgaps": False, "line": {"color": colour, "width": 1.2},
                       "marker": {"size": 4}, "meta": {"role": "anytime", "label": name}})
    return {"data": traces, "layout": _layout(title, x, y)}


def task_chart(rows: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """Per task: test error (bars, left axis) and training FLOPs (markers, right axis, log)."""
    ok = [r for r in rows if r["test_error"] is not None]
    tasks = [r["task"] for r in ok]
    layout = _layout(title, "task", "test error", log_x=False)
    layout["xaxis"]["type"] = "category"
    layout["yaxis2"] = {"title": {"text": "training FLOPs"}, "overlaying": "y", "side": "right", "type": "log",
                        "showgrid": False}
    layout["margin"]["r"] = 90  # room for the right axis' tick labels
    return {"data": [{"type": "bar", "x": tasks, "y": [r["test_error"] for r in ok], "name": "test error",
                      "marker": {"color": PALETTE[0]}, "meta": {"role": "task_error"}},
                     {"type": "scatter", "mode": "markers", "x": tasks, "yaxis": "y2", "name": "training FLOPs",
                      "y": [r["compute"]["train"]["algorithmic"] for r in ok], "marker": {"color": PALETTE[1], "size": 10},
                      "meta": {"role": "task_flops"}}], "layout": layout}


def bars(values: dict[str, float], title: str, y: str) -> dict[str, Any]:
    """One bar per name (e.g. kept channels per layer)."""
    layout = _layout(title, "", y, log_x=False)
    layout["xaxis"]["type"] = "category"
    return {"data": [{"type": "bar", "x": list(values), "y": list(values.values()), "marker": {"color": PALETTE[2]},
                      "name": y, "meta": {"role": "bars"}}], "layout": layout}


def heatmap(tasks: list[str], matrix: list[list[float | None]], title: str) -> dict[str, Any]:
    """The accuracy matrix: row i = after training task i, column j = accuracy on task j."""
    text = [["" if v is None else f"{v:.3f}" for v in row] for row in matrix]
    layout = _layout(title, "evaluated on task j", "after training task i", log_x=False)
    layout["xaxis"]["type"] = layout["yaxis"]["type"] = "category"
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": [{"type": "heatmap", "z": matrix, "x": tasks, "y": tasks, "text": text, "texttemplate": "%{text}",
                      "colorscale": "Viridis", "zmin": 0, "zmax": 1, "colorbar": {"title": {"text": "accuracy"}},
                      "hovertemplate": "after %{y}, on %{x}: %{z:.4f}<extra></extra>", "meta": {"role": "accuracy_matrix"}}],
            "layout": layout}
