"""`nevisbench compare`'s table: one row per study, configuration and budget.

Seeds are the repeats: each row gives the mean and the sample standard deviation (n - 1) of the
final error over them, and the mean compute. Runs are read by `runs.load_runs` and named by
`labels.label_runs` (the same reader and labeller as `plot`); rows of different studies (task
sets, budgets kinds, measures) are never merged. The metrics' numbers (`StreamMetric.scalars`:
continual scores, forward transfer) follow as columns where any row's runs have them.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.measure import Measurement

from nevisbench.analysis.labels import collect, study_key
from nevisbench.analysis.runs import Run
from nevisbench.errors import ConfigError
from nevisbench.run.store.audit import flagged_tasks
from nevisbench.run.store.metric import metric_scalars
from nevisbench.run.store.metrics import METRICS
from nevisbench.run.store.report import format_flops
from nevisbench.run.store.scores import X_LABELS

__all__ = ["Row", "collect", "compare_rows", "metric_columns", "print_table", "relate_to", "render_table", "to_csv",
           "to_markdown", "COLUMNS"]

_SCENARIOS = ("transfer", "continual")


@dataclass
class Row:
    configuration: str
    scenario: str
    stream: str  # the study: the stream, and its task set when runs of the stream differ in it
    budget: str
    seeds: int
    error_mean: float
    error_std: float | None  # None with one seed
    flops_mean: float
    measure: str
    budget_value: float = 0.0
    points: list[Run] = field(default_factory=list, repr=False)
    flops_without_search_mean: float = 0.0  # the same runs' compute without their search trials
    metrics: dict[str, float] = field(default_factory=dict)  # "<metric>/<scalar>" -> mean over the seeds that have it
    baseline: str = ""  # the baseline asked for (`relate_to`), and the configuration it matched in this row's study
    baseline_row: str = ""
    vs_baseline: float | None = None  # flops_mean as a multiple of the baseline's in its study, scenario, budget and backbone


COLUMNS = ("configuration", "scenario", "stream", "budget", "seeds", "error_mean", "error_std", "flops_mean", "measure",
           "flops_without_search_mean")


def _row(group: list[Run]) -> Row:
    first = group[0]
    errors = [r.error for r in group]
    flops = [r.x() or 0.0 for r in group]
    bare = [r.point_without_search.get("flops" if r.measure == "algorithmic" else "flops_executed", x)
            for r, x in zip(group, flops, strict=False)]
    metrics = {key: statistics.fmean(values) for key in metric_columns([r.metrics for r in group])
               if (values := [r.metrics[key] for r in group if key in r.metrics])}
    return Row(first.label, first.scenario, first.study, first.budget, len(group), statistics.fmean(errors),
               statistics.stdev(errors) if len(errors) > 1 else None, statistics.fmean(flops), first.measure,
               first.budget_value, group, statistics.fmean(bare), metrics)


def metric_columns(found: list[dict[str, float]]) -> list[str]:
    """The metrics' numbers (`<metric>/<scalar>`, in `METRICS` order) that any of `found` has: the
    columns after the fixed ones (a study without continual scores shows none)."""
    return [key for section, scalar in metric_scalars(METRICS) if any((key := f"{section}/{scalar}") in f for f in found)]


def compare_rows(runs: list[Run]) -> list[Row]:
    """One row per (study, configuration, budget): its seeds' mean and std."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault((study_key(run), run.label, run.budget_kind, run.budget_value), []).append(run)
    rows = [_row(group) for group in groups.values()]
    order = {s: i for i, s in enumerate(_SCENARIOS)}
    rows.sort(key=lambda r: (r.stream, order.get(r.scenario, 9), r.scenario, r.configuration, r.budget_value,
                             r.flops_mean))
    return rows


def _comparable(row: Row) -> tuple[Any, ...]:
    first = row.points[0] if row.points else None
    return row.stream, row.scenario, row.budget, first.config.get("backbone.name") if first else None


def relate_to(rows: list[Row], baseline: str) -> None:
    """Give each row its compute as a multiple of `baseline`'s (a configuration, or a learner with
    one configuration) among the rows of the same study, scenario, budget and backbone; rows with no
    such baseline row keep None."""
    picked = [r for r in rows if r.configuration == baseline] or \
        [r for r in rows if r.points and r.points[0].learner == baseline]
    if not picked:
        names = sorted({r.configuration for r in rows} | {r.points[0].learner for r in rows if r.points})
        raise ConfigError(f"Unknown --baseline '{baseline}': no row of this comparison is that configuration or "
                          f"learner. Valid: {', '.join(names)}")
    found: dict[tuple[Any, ...], Row] = {}
    for row in picked:
        other = found.setdefault(_comparable(row), row)
        if other is not row:
            raise ConfigError(f"Ambiguous --baseline '{baseline}': it names both '{other.configuration}' and "
                              f"'{row.configuration}' in one study; give one of them")
    for row in rows:
        base = found.get(_comparable(row))
        row.baseline, row.baseline_row = baseline, base.configuration if base else ""
        row.vs_baseline = row.flops_mean / base.flops_mean if base and base.flops_mean else None


def _numeric(header: str) -> bool:
    return header != "compute measure" and (header.startswith(("seeds", "error", "compute", "x ")) or "/" in header)


def _searched(rows: list[Row]) -> bool:
    """Whether any row's compute includes search trials (else the tables skip the column of compute
    without search, which would repeat the compute; the CSV always has it)."""
    return any(r.flops_without_search_mean != r.flops_mean for r in rows)


def _cells(row: Row, metrics: list[str], searched: bool) -> list[str]:
    std = "-" if row.error_std is None else f"{row.error_std:.4f}"
    cells = [row.configuration, row.scenario, row.stream, row.budget, str(row.seeds), f"{row.error_mean:.4f}", std,
             format_flops(row.flops_mean), row.measure]
    cells += [format_flops(row.flops_without_search_mean)] if searched else []
    cells += [("-" if row.vs_baseline is None else f"{row.vs_baseline:.2f}")] if row.baseline else []
    return cells + [f"{row.metrics[key]:.4f}" if key in row.metrics else "-" for key in metrics]


def _headers(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The table's headers, and the metric keys among them."""
    metrics = metric_columns([r.metrics for r in rows])
    fixed = list(_HEADERS if _searched(rows) else _HEADERS[:-1])
    fixed += [f"x {rows[0].baseline}'s compute"] if rows and rows[0].baseline else []
    return fixed + [f"{key} (mean)" for key in metrics], metrics


_HEADERS = ("configuration", "scenario", "stream", "budget", "seeds", "error (mean)", "error (std)", "compute (mean)",
            "compute measure", "compute without search (mean)")


def print_table(console: Console, table: Any) -> None:
    """Print a table that keeps its columns on a pipe or in a log: not a terminal, the console
    takes the width the table needs instead of the 80 columns rich assumes there (which folded
    "finetune" into "finetu / ne")."""
    needed = Measurement.get(console, console.options.update(width=100_000), table).maximum
    if console.is_terminal or needed <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = needed
    try:
        console.print(table)
    finally:
        console.width = width


def render_table(rows: list[Row], title: str = "comparison") -> Any:
    from rich.table import Table

    kinds = sorted({r.points[0].x_kinds for r in rows if r.points})
    axis = X_LABELS[kinds[0]] if len(kinds) == 1 else "as each study's budget.x says"
    notes = audit_notes(rows)
    caption = "Flagged by the time audit (compute the meter did not see): " + "; ".join(notes) if notes else None
    table = Table(title=f"{title}: final mean error over seeds vs counted compute ({axis})", title_justify="left",
                  caption=caption, caption_justify="left")
    headers, metrics = _headers(rows)
    for header in headers:
        table.add_column(header, justify="right" if _numeric(header) else "left", overflow="fold")
    for row in rows:
        table.add_row(*_cells(row, metrics, _searched(rows)))
    return table


def to_csv(rows: list[Row]) -> str:
    """Machine-readable: full-precision numbers, empty error_std with one seed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metrics = metric_columns([r.metrics for r in rows])
    related = bool(rows and rows[0].baseline)
    writer.writerow([*COLUMNS, *(["flops_vs_baseline", "baseline"] if related else []), *metrics])
    for r in rows:
        relation = ["" if r.vs_baseline is None else repr(r.vs_baseline), r.baseline_row] if related else []
        writer.writerow([r.configuration, r.scenario, r.stream, r.budget, r.seeds, repr(r.error_mean),
                         "" if r.error_std is None else repr(r.error_std), repr(r.flops_mean), r.measure,
                         repr(r.flops_without_search_mean), *relation,
                         *(repr(r.metrics[k]) if k in r.metrics else "" for k in metrics)])
    return buffer.getvalue()


def to_markdown(rows: list[Row]) -> str:
    headers, metrics = _headers(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if _numeric(h) else "---" for h in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row, metrics, _searched(rows))) + " |")
    flagged = audit_notes(rows)
    if flagged:
        lines += ["", "Flagged by the time audit (compute the meter did not see; ringed in red on the figure):", ""]
        lines += [f"- {note}" for note in flagged]
    return "\n".join(lines) + "\n"


def audit_notes(rows: list[Row]) -> list[str]:
    """One line per task the time audit flagged: the run, the task, the reason."""
    return [f"{run.run_dir.name} ({row.configuration}), task {task}: {reason}" for row in rows for run in row.points
            for task, reason in flagged_tasks(run.summary.get("tasks") or []).items()]
