"""`nevisbench compare`: finished runs side by side, one row per learner configuration and budget.

A run is one point (DESIGN §8): `summary["point"]` when the run wrote it, else x = the stream's
training + search FLOPs and y = its final mean test error. Seeds are the repeats: each row gives
the mean and the sample standard deviation (n - 1) over them. A configuration is the learner option,
its settings that differ from the option's YAML file (or between the runs compared), and any other
config key that differs between the runs (seed, run name and output paths aside); scenario, stream
and budget are columns of their own.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nevisbench.config.keys import flatten
from nevisbench.errors import ConfigError

__all__ = ["RunPoint", "Row", "collect", "compare_rows", "render_table", "to_csv", "to_markdown", "plot_comparison",
           "COLUMNS"]

# Config keys that never make two runs different configurations.
_NOT_A_SETTING = ("seed", "run_name", "out_dir", "resume", "logger.", "trainer.progress_bar", "trainer.log_every_n_steps",
                  "choices.logger", "data.root")
_SCENARIOS = ("transfer", "continual")


@dataclass
class RunPoint:
    run_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    flops: float  # x: counted compute of the stream (training + search)
    error: float  # y: final mean error
    measure: str
    sub_points: dict[str, tuple[float, float]] = field(default_factory=dict)  # objects / ood -> (x, y)
    label: str = ""
    flops_without_search: float | None = None  # x without the search trials' compute (training only)

    @property
    def learner(self) -> str:
        return str(self.summary.get("learner"))

    @property
    def scenario(self) -> str:
        return str(self.summary.get("scenario", self.config.get("scenario", "")))

    @property
    def stream(self) -> str:
        return str(self.summary.get("stream", ""))

    @property
    def budget(self) -> str:
        flops = (self.summary.get("budget") or {}).get("flops_per_task")
        if flops:
            return f"{flops:.3g} FLOPs/task"
        steps = (self.config.get("train") or {}).get("max_steps")
        return f"{steps} steps/task" if steps is not None else "-"

    @property
    def budget_value(self) -> float:
        flops = (self.summary.get("budget") or {}).get("flops_per_task")
        return float(flops) if flops else float((self.config.get("train") or {}).get("max_steps") or 0)




def _task_compute(task: dict[str, Any], measure: str) -> float:
    flops = task.get("flops") or {}
    source = flops.get("executed") or {} if measure == "executed" else flops
    return float(source.get("train", 0.0)) + float(source.get("search", 0.0))


def _point(run_dir: Path) -> RunPoint:
    from nevisbench.analysis.scores import sub_streams

    from nevisbench.run.results import ResultsStore

    summary = ResultsStore(run_dir).read_summary()
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    point = summary.get("point") or {}
    measure = str(point.get("measure") or (summary.get("budget") or {}).get("measure") or "algorithmic")
    field_name = "flops_executed" if measure == "executed" else "flops"
    flops = summary.get("flops") or {}
    source = flops.get("executed") or {} if measure == "executed" else flops
    if point:
        x, y = float(point.get(field_name, point["flops"])), point["error"]
    else:
        x = float(source.get("train", 0.0)) + float(source.get("search", 0.0))
        y = summary.get("final_mean_error", summary.get("mean_test_error"))
    bare = summary.get("point_without_search") or {}
    without = float(bare[field_name]) if field_name in bare else float(source.get("train", 0.0))
    if y is None:
        raise ConfigError(f"Run '{run_dir}' has no final error (every task failed?); leave it out of the comparison")
    ok = [t for t in summary.get("tasks", []) if t.get("status") == "ok"]
    subs = {}
    for name, tasks in sub_streams(ok).items():
        given = (summary.get("sub_streams") or {}).get(name) or {}
        sub_point = given.get("point") or {}
        sub_error = sub_point.get("error", given.get("final_mean_error"))
        if sub_error is not None:
            subs[name] = (float(sub_point.get("flops", sum(_task_compute(t, measure) for t in tasks))), float(sub_error))
    return RunPoint(run_dir, summary, config if isinstance(config, dict) else {}, x, float(y), measure, subs,
                    flops_without_search=without)


def _run_dirs(path: Path) -> list[Path]:
    if (path / "summary.json").is_file():
        return [path]
    if (path / "jobs.jsonl").is_file():  # a sweep folder: its finished runs
        return sorted(p for p in (path / "runs").glob("*") if (p / "summary.json").is_file())
    if path.is_dir():  # a folder of run folders, e.g. runs/
        found = sorted(p for p in path.glob("*") if (p / "summary.json").is_file())
        if found:
            return found
    raise ConfigError(f"'{path}' is not a finished run (no summary.json), a sweep folder (no jobs.jsonl) or a folder "
                      "of finished runs")


def _labels(points: list[RunPoint]) -> None:
    """Name each run's configuration: learner option + settings that set it apart."""
    from nevisbench.config import config_dir

    flats = [flatten({k: v for k, v in p.config.items() if k != "learner"}) for p in points]
    varying = sorted({k for f in flats for k in f if len({repr(g.get(k)) for g in flats}) > 1
                      and not k.startswith(_NOT_A_SETTING) and k not in ("scenario", "stream.name", "budget.flops_per_task",
                                                                        "choices.learner", "train.max_steps", "choices.stream")})
    by_learner: dict[str, list[RunPoint]] = {}
    for p in points:
        by_learner.setdefault(p.learner, []).append(p)
    for learner, group in by_learner.items():
        yaml_file = config_dir() / "learner" / f"{learner}.yaml"
        defaults = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) if yaml_file.is_file() else {}
        configs = [p.summary.get("learner_config") or {} for p in group]
        keys = sorted({k for c in configs for k in c if k != "name"})
        shown = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1
                 or (k in (defaults or {}) and any(c.get(k) != defaults[k] for c in configs))]
        for p, c, flat in zip(group, configs, [flats[points.index(p)] for p in group]):
            settings = [f"{k}={c.get(k)}" for k in shown] + [f"{k}={flat.get(k)}" for k in varying]
            p.label = learner + (f" ({', '.join(settings)})" if settings else "")


def collect(paths: list[str | Path]) -> list[RunPoint]:
    """The finished runs under `paths` (run folders, sweep folders or folders of runs), labelled."""
    if not paths:
        raise ConfigError("No folders given: pass run folders or sweep folders, e.g. sweeps/demo")
    dirs: list[Path] = []
    for path in map(Path, paths):
        dirs += [d for d in _run_dirs(path) if d not in dirs]
    points = [_point(d) for d in dirs]
    _labels(points)
    return points


@dataclass
class Row:
    configuration: str
    scenario: str
    stream: str
    budget: str
    seeds: int
    error_mean: float
    error_std: float | None  # None with one seed
    flops_mean: float
    measure: str
    budget_value: float = 0.0
    points: list[RunPoint] = field(default_factory=list, repr=False)
    flops_without_search_mean: float = 0.0  # the same runs' compute without their search trials


COLUMNS = ("configuration", "scenario", "stream", "budget", "seeds", "error_mean", "error_std", "flops_mean", "measure",
           "flops_without_search_mean")


def compare_rows(points: list[RunPoint]) -> list[Row]:
    groups: dict[tuple[str, str, str, str], list[RunPoint]] = {}
    for p in points:
        groups.setdefault((p.label, p.scenario, p.stream, p.budget), []).append(p)
    rows = []
    for (label, scenario, stream, budget), group in groups.items():
        errors = [p.error for p in group]
        rows.append(Row(label, scenario, stream, budget, len(group), statistics.fmean(errors),
                        statistics.stdev(errors) if len(errors) > 1 else None,
                        statistics.fmean(p.flops for p in group), "/".join(sorted({p.measure for p in group})),
                        group[0].budget_value, group,
                        statistics.fmean(p.flops if p.flops_without_search is None else p.flops_without_search
                                         for p in group)))
    order = {s: i for i, s in enumerate(_SCENARIOS)}
    rows.sort(key=lambda r: (r.stream, order.get(r.scenario, 9), r.configuration, r.budget_value, r.flops_mean))
    return rows


def _numeric(header: str) -> bool:
    return header != "compute measure" and header.startswith(("seeds", "error", "compute"))


def _searched(rows: list[Row]) -> bool:
    """Whether any row's compute includes search trials (else the tables skip the column of compute
    without search, which would repeat the compute; the CSV always has it)."""
    return any(r.flops_without_search_mean != r.flops_mean for r in rows)


def _cells(row: Row) -> list[str]:
    from nevisbench.run.report import format_flops

    std = "-" if row.error_std is None else f"{row.error_std:.4f}"
    return [row.configuration, row.scenario, row.stream, row.budget, str(row.seeds), f"{row.error_mean:.4f}", std,
            format_flops(row.flops_mean), row.measure, format_flops(row.flops_without_search_mean)]


_HEADERS = ("configuration", "scenario", "stream", "budget", "seeds", "error (mean)", "error (std)", "compute (mean)",
            "compute measure", "compute without search (mean)")


def render_table(rows: list[Row], title: str = "comparison") -> Any:
    from rich.table import Table

    table = Table(title=f"{title}: final mean error over seeds vs counted compute (training + search)",
                  title_justify="left")
    shown = len(_HEADERS) if _searched(rows) else len(_HEADERS) - 1
    for header in _HEADERS[:shown]:
        table.add_column(header, justify="right" if _numeric(header) else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*_cells(row)[:shown])
    return table


def to_csv(rows: list[Row]) -> str:
    """Machine-readable: full-precision numbers, empty error_std with one seed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.configuration, r.scenario, r.stream, r.budget, r.seeds, repr(r.error_mean),
                         "" if r.error_std is None else repr(r.error_std), repr(r.flops_mean), r.measure,
                         repr(r.flops_without_search_mean)])
    return buffer.getvalue()


def to_markdown(rows: list[Row]) -> str:
    headers = _HEADERS if _searched(rows) else _HEADERS[:-1]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if _numeric(h) else "---" for h in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)[:len(headers)]) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(points: list[RunPoint], out: str | Path) -> Path:
    """Error against compute: a curve per configuration through its budgets, with a band of
    mean +- std over seeds, the Pareto front over all runs; a panel per scenario (columns) and for
    the whole stream and each sub-stream the runs have (rows: all, objects, ood). A configuration
    whose runs searched hyperparameters also gets a dotted curve at its compute without the search
    trials (whole-stream panels), so the price of tuning is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nevisbench.analysis.plot import pareto_front

    scenarios = sorted({p.scenario for p in points}, key=lambda s: (_SCENARIOS + (s,)).index(s))
    parts = ["all"] + [s for s in ("objects", "ood") if any(s in p.sub_points for p in points)]
    labels = sorted({p.label for p in points})
    colours = {label: plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(i % 20) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(len(parts), len(scenarios), figsize=(6.2 * len(scenarios), 4.4 * len(parts)),
                             squeeze=False)
    for i, part in enumerate(parts):
        for j, scenario in enumerate(scenarios):
            ax = axes[i][j]
            chosen = [p for p in points if p.scenario == scenario and (part == "all" or part in p.sub_points)]
            xy = {id(p): ((p.flops, p.error) if part == "all" else p.sub_points[part]) for p in chosen}
            for label in labels:
                mine = [p for p in chosen if p.label == label]
                if not mine:
                    continue
                budgets: dict[float, list[RunPoint]] = {}
                for p in mine:
                    budgets.setdefault(p.budget_value, []).append(p)
                xs, means, stds = [], [], []
                for _, group in sorted(budgets.items()):
                    ys = [xy[id(p)][1] for p in group]
                    xs.append(statistics.fmean(xy[id(p)][0] for p in group))
                    means.append(statistics.fmean(ys))
                    stds.append(statistics.stdev(ys) if len(ys) > 1 else 0.0)
                order = sorted(range(len(xs)), key=xs.__getitem__)
                xs, means, stds = ([v[k] for k in order] for v in (xs, means, stds))
                colour = colours[label]
                ax.plot(xs, means, marker="o", color=colour, linewidth=1.6, markersize=4, label=label)
                ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=colour, alpha=0.18, linewidth=0)
                ax.scatter([xy[id(p)][0] for p in mine], [xy[id(p)][1] for p in mine], color=colour, s=8, alpha=0.5)
                if part == "all" and any(p.flops_without_search not in (None, p.flops) for p in mine):
                    # the same runs placed at their compute without the search trials (dashed)
                    bare = sorted((statistics.fmean(p.flops_without_search for p in group),
                                   statistics.fmean(p.error for p in group)) for group in budgets.values())
                    ax.plot(*zip(*bare), marker="o", markerfacecolor="none", color=colour, linestyle=":", linewidth=1.3,
                            markersize=4, label=f"{label}, without search compute")
            front = pareto_front(list(xy.values()))
            if front:
                fx, fy = zip(*front)
                ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1.8, alpha=0.75,
                        label="Pareto front (all runs)")
            ax.set_xscale("log")
            measure = "/".join(sorted({p.measure for p in chosen})) or "algorithmic"
            ax.set_xlabel(f"counted compute, FLOPs ({measure}, training + search)")
            ax.set_ylabel("final mean test error")
            ax.set_title(f"{scenario} - {'whole stream' if part == 'all' else f'sub-stream: {part}'}")
            ax.grid(True, which="both", alpha=0.3)
            if not chosen:
                ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    handles, names = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # every configuration once in the legend, whichever panel shows it
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=8, frameon=False)
    rows_of_legend = math.ceil(len(names) / min(3, len(names) or 1))
    fig.tight_layout(rect=(0, 0.035 * rows_of_legend / len(parts) + 0.02, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
