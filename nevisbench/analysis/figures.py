"""Error-vs-compute figures: the one drawing path of `plot`, `compare --out`, the sweep and the notebook.

One panel per study (runs that are comparable, see `labels`) and scenario, and per sub-stream
(objects / ood) the runs have. In each: per configuration, its seeds at each budget are one point
(the mean, with a band of +- one sample std and the seeds as dots), its budgets joined in compute
order; the Pareto front over those points, drawn on top (absent when it is a single point). One
quantity per axis: y is the final mean test error; the anytime curves (mean dev error of
mid-schedule models, against training compute without search) get panels of their own.

Sized for a paper: 3.5 in per panel column (two columns at most, 7 in), 8 pt text, 300 dpi.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nevisbench.analysis.labels import study_key
from nevisbench.analysis.runs import AXES, Run, warn_stderr
from nevisbench.errors import ConfigError
from nevisbench.run.store.scores import X_LABELS

__all__ = ["FORMATS", "check_figure_path", "save_figure", "pareto_front", "curves", "compute_figure", "plot_comparison"]

FORMATS = (".png", ".pdf", ".svg")
PANEL_INCHES = (3.5, 2.5)  # one column of a two-column paper
DPI = 300
MAX_PANELS = 12  # six rows of two: a page
MAX_LEGEND = 30  # legend entries
FONT: dict[str, Any] = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
        "legend.fontsize": 8}
_PARTS = ("all", "objects", "ood")
_SOLO_BAND = 1.12  # a configuration with one budget: its band spans x / 1.12 .. x * 1.12 (visible on a log axis)


def check_figure_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"Cannot write a figure to '{out}': unknown format '{out.suffix}'. Valid: {', '.join(FORMATS)}")
    return out


def save_figure(fig: Any, out: str | Path) -> Path:
    """Write `fig` (PNG/PDF/SVG by suffix, 300 dpi) and close it."""
    import matplotlib.pyplot as plt

    out = check_figure_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by any point with less or equal compute and lower error."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _xy(run: Run, part: str, axis: str | None, bare: bool = False) -> tuple[float, float] | None:
    point = (run.point_without_search if bare else run.point) if part == "all" else run.sub_points.get(part, {})
    x = point.get(AXES[axis or run.measure][0])
    error = run.error if bare else point.get("error")
    return None if x is None or error is None else (x, error)


def curves(runs: list[Run], part: str = "all", axis: str | None = None, *, bare: bool = False
           ) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per configuration label: (mean x, mean error, sample std of the error (0 for one seed), seeds)
    per budget, in compute order. `bare`: x without the search trials' compute."""
    budgets: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for run in runs:
        xy = _xy(run, part, axis, bare)
        if xy is not None:
            budgets.setdefault(run.label, {}).setdefault(run.budget_value, []).append(xy)
    out = {}
    for label, groups in budgets.items():
        points = [(statistics.fmean(x for x, _ in g), statistics.fmean(y for _, y in g),
                   statistics.stdev(y for _, y in g) if len(g) > 1 else 0.0, len(g)) for g in groups.values()]
        out[label] = sorted(points)
    return out


def _log_ticks(ax: Any, values: list[float]) -> None:
    """A log x axis with at least three labelled ticks, even over a short range: decades, else
    1-2-5 steps, else evenly spaced round numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    lo, hi = min(values), max(values)
    lo, hi = (lo / 1.6, hi * 1.6) if lo > 0 else (1e-3, max(hi, 1.0) * 1.6)
    ax.set_xlim(lo, hi)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for subs in ((1,), (1, 2, 5)):
        ticks = [m * 10.0**e for e in decades for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3:
            break
    for bins in (4, 6, 9):
        if len(ticks) >= 3:
            break
        ticks = [t for t in MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks[:: max(1, math.ceil(len(ticks) / 6))]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}".replace("e+0", "e").replace("e+", "e")))


def _draw_points(ax: Any, runs: list[Run], part: str, axis: str | None, colours: dict[str, Any]) -> list[float]:
    """Each configuration's curve (mean, band, seeds) and the Pareto front; returns the x values."""
    means: list[tuple[float, float]] = []
    xs: list[float] = []
    drawn = curves(runs, part, axis)
    seeds: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        xy = _xy(run, part, axis)
        if xy is not None:
            seeds.setdefault(run.label, []).append(xy)
    for label, points in sorted(drawn.items()):
        x, mean, std, _ = zip(*points, strict=False)
        ax.plot(x, mean, marker="o", markersize=3, linewidth=1.2, color=colours[label], label=label, zorder=3)
        band, low, high = list(x), [m - s for m, s in zip(mean, std, strict=False)], [m + s for m, s in zip(mean, std, strict=False)]
        if len(x) == 1:  # one budget: the band is a box around the point, not a line
            band, low, high = [x[0] / _SOLO_BAND, x[0] * _SOLO_BAND], low * 2, high * 2
        ax.fill_between(band, low, high, color=colours[label], alpha=0.2, linewidth=0, zorder=2)
        ax.plot(*zip(*seeds[label], strict=False), marker=".", markersize=2.5, alpha=0.5, color=colours[label], linestyle="none",
                zorder=2)
        means += list(zip(x, mean, strict=False))
        xs += x
    if part == "all":  # a searched configuration: also at its compute without the search trials (dotted)
        for label, points in sorted(curves(runs, part, axis, bare=True).items()):
            bare_x, bare_mean = [p[0] for p in points], [p[1] for p in points]
            if any(a != b[0] for a, b in zip(bare_x, drawn[label], strict=False)):
                ax.plot(bare_x, bare_mean, linestyle=":", marker="o", markerfacecolor="none", markersize=3, linewidth=1.0,
                        color=colours[label], label=f"{label}, training compute only", zorder=3)
                xs += bare_x
    _mark_flagged(ax, runs, part, axis)
    front = pareto_front(means)
    if len(front) >= 2:  # a single point is no front: absent rather than invisible
        fx, fy = zip(*front, strict=False)
        ax.step(fx, fy, where="post", color="black", linestyle=(0, (4, 2)), linewidth=0.9, label="Pareto front",
                zorder=5)
    return xs


def _mark_flagged(ax: Any, runs: list[Run], part: str, axis: str | None) -> None:
    """A red ring around each run the time audit flagged (compute the meter did not see: its x is
    too small by an unknown amount); the table says which task and why."""
    flagged = [xy for run in runs if run.metrics.get("audit/flagged", 0) > 0 and (xy := _xy(run, part, axis)) is not None]
    if flagged:
        ax.plot(*zip(*flagged, strict=False), marker="o", markersize=9, markerfacecolor="none", markeredgecolor="red",
                markeredgewidth=1.2, linestyle="none", label="flagged by the time audit", zorder=6)


def _points_panel(ax: Any, runs: list[Run], part: str, axis: str | None, colours: dict[str, Any]) -> None:
    xs = _draw_points(ax, runs, part, axis, colours)
    first = runs[0]
    what = AXES[axis or first.measure][1]
    ax.set_xscale("log")
    if xs:
        _log_ticks(ax, xs)
    ax.set_xlabel(f"compute: {what}, {X_LABELS[first.x_kinds]}")
    ax.set_ylabel("final mean test error")
    where = "" if part == "all" else f", sub-stream {part}"
    ax.set_title(textwrap.fill(f"{first.study}, {first.scenario}{where}", 58))
    ax.grid(True, alpha=0.3)


def _anytime_panel(ax: Any, runs: list[Run], axis: str | None, colours: dict[str, Any]) -> None:
    field = AXES[axis or runs[0].measure][0]
    xs = []
    for run in runs:
        curve = [p for p in run.anytime.get("all", []) if field in p]
        if curve:
            xs += [p[field] for p in curve]
            ax.plot(xs[-len(curve):], [p["mean_error"] for p in curve], linewidth=0.8, alpha=0.7,
                    color=colours[run.label], marker=".", markersize=2)
    ax.set_xscale("log")
    if xs:
        _log_ticks(ax, xs)
    ax.set_xlabel(f"compute: {AXES[axis or runs[0].measure][1]}, training only")
    ax.set_ylabel("mean dev error, mid-schedule")
    ax.set_title(textwrap.fill(f"{runs[0].study}, {runs[0].scenario}: anytime curves", 58))
    ax.grid(True, alpha=0.3)


def _panels(runs: list[Run], anytime: bool) -> list[tuple[str, list[Run]]]:
    studies: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        studies.setdefault(study_key(run), []).append(run)
    panels = []
    for _, group in sorted(studies.items(), key=lambda kv: (kv[1][0].study, kv[1][0].scenario != "transfer")):
        panels += [(part, group) for part in _PARTS if part == "all" or any(part in r.sub_points for r in group)]
        if anytime and any(r.anytime.get("all") for r in group):
            panels.append(("anytime", group))
    return panels


def compute_figure(runs: list[Run], *, x: str | None = None, anytime: bool = False,
                   warn: Callable[[str], None] = warn_stderr) -> Any:
    """The figure (see the module docstring) of labelled runs; `x`: an AXES key, None for each
    study's budget measure; `anytime`: add each study's anytime-curve panel. At most MAX_PANELS
    panels (the rest warned of: a figure has to fit a page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(runs, anytime)
    if len(panels) > MAX_PANELS:
        warn(f"the runs make {len(panels)} panels (studies x sub-streams); the figure draws the first {MAX_PANELS}: "
             "pass fewer folders per figure (compare's table lists them all)")
        panels = panels[:MAX_PANELS]
    labels = sorted({r.label for r in runs})
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colours = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    with plt.rc_context(FONT):  # type: ignore[arg-type]
        fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows),
                                 layout="constrained")
        for ax, (part, group) in zip(axes.flat, panels, strict=False):
            if part == "anytime":
                _anytime_panel(ax, group, x, colours)
            else:
                _points_panel(ax, group, part, x, colours)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        _legend(fig, axes, cols)
    return fig


def _legend(fig: Any, axes: Any, cols: int) -> None:
    """Every curve once, below the panels; the figure grows to hold it rather than squeezing them."""
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=False):
            entries.setdefault(name, handle)
    if len(entries) > MAX_LEGEND:  # a legend longer than a page says nothing: the table has them all
        from matplotlib.lines import Line2D

        more = len(entries) - MAX_LEGEND
        entries = dict(list(entries.items())[:MAX_LEGEND])
        entries[f"... and {more} more (see compare's table)"] = Line2D([], [], linestyle="none")
    names = [textwrap.fill(n, 60 if cols == 1 else 55) for n in entries]
    lines = sum(n.count("\n") + 1 for n in names) / cols
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.17 * math.ceil(lines) + 0.1)
    fig.legend(list(entries.values()), names, loc="outside lower center", ncol=cols, frameon=False)


def plot_comparison(runs: list[Run], out: str | Path, *, x: str | None = None, anytime: bool = False,
                    warn: Callable[[str], None] = warn_stderr) -> Path:
    """Write the figure of labelled runs to `out` (.png, .pdf or .svg); runs whose summary lacks the
    compute of axis `x` are left out, with one warning."""
    check_figure_path(out)
    lacking = [r for r in runs if r.x(x) is None]
    if lacking:
        axis = x or lacking[0].measure
        warn(f"{len(lacking)} run(s) record no '{axis}' compute in their point (e.g. {lacking[0].run_dir}): left "
             "out of the figure")
    return save_figure(compute_figure(runs, x=x, anytime=anytime, warn=warn), out)
