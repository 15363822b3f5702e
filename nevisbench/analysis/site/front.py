"""The report's front page (per study: the compute-performance figure for the stream and each
sub-stream, the table of configurations, the anytime curves, and the axis stated) and its
configuration ("learner") pages."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from html import escape
from typing import Any

from nevisbench.analysis.compare import Row, compare_rows
from nevisbench.analysis.runs import AXES, Run
from nevisbench.analysis.site import charts, details
from nevisbench.analysis.site.html import Page, cell, link, table
from nevisbench.run.store.metric import metric_scalars
from nevisbench.run.store.metrics import METRICS
from nevisbench.run.store.scores import X_LABELS

__all__ = ["Study", "front_page", "learner_page"]

_PARTS = ("all", "objects", "ood")


class Study:
    """Runs that are comparable (`labels.study_key`): one block of the front page, never joined with another."""

    def __init__(self, anchor: str, runs: list[Run]) -> None:
        self.anchor, self.runs = anchor, runs
        first = runs[0]
        self.title = f"{first.study}, {first.scenario}"
        self.labels = sorted({r.label for r in runs})
        self.parts = [p for p in _PARTS if p == "all" or any(p in r.sub_points for r in runs)]

    def axis(self) -> str:
        first = self.runs[0]
        tasks = ", ".join(first.tasks)
        return (f"x: counted compute, {AXES[first.measure][1]}, {X_LABELS.get(first.x_kinds, first.x_kinds)} "
                f"(budget.x = {first.x_kinds}, budget.measure = {first.measure}); y: final mean test error over "
                f"{len(first.tasks)} task(s) ({tasks}); {first.budget_kind} budgets; each point a configuration's "
                "seeds at one budget (mean, band +- one std, the seeds as dots)")


def _metric_headers(rows: list[Row]) -> list[str]:
    return [key for section, scalar in metric_scalars(METRICS) if any((key := f"{section}/{scalar}") in r.metrics for r in rows)]


def _auc(row: Row) -> float | None:
    values = [r.auc for r in row.points if r.auc is not None]
    return statistics.fmean(values) if values else None


def _table(rows: list[Row], href: Callable[[Run], str], root: str = "") -> str:
    metrics = _metric_headers(rows)
    searched = any(r.flops_without_search_mean != r.flops_mean for r in rows)
    auc = any(_auc(r) is not None for r in rows)
    headers = ["configuration", "budget", "runs (seeds)", "error (mean +- std)", "compute (mean)", "compute measure"]
    headers += ["compute without search"] * searched + ["AUC (anytime, mean)"] * auc + metrics + ["audit flagged"]
    body = []
    for row in rows:
        std = "" if row.error_std is None else f" +- {row.error_std:.4f}"
        cells = [cell(link(root + href(row.points[0]), row.configuration), "html"), cell(row.budget), cell(row.seeds),
                 cell(f"{row.error_mean:.4f}{std}"), cell(row.flops_mean, "flops"), cell(row.measure)]
        cells += [cell(row.flops_without_search_mean, "flops")] * searched + [cell(_auc(row))] * auc
        cells += [cell(row.metrics.get(key)) for key in metrics]
        cells.append(cell(sum(1 for r in row.points if details.flagged(r))))
        body.append(cells)
    return table(headers, body)


def _anytime_series(runs: list[Run]) -> dict[str, list[tuple[float, float]]]:
    """Per configuration, its runs' anytime curves joined with gaps (None) between runs."""
    series: dict[str, list[Any]] = {}
    for run in sorted(runs, key=lambda r: r.label):
        field = AXES[run.measure][0]
        curve = [(p[field], p["mean_error"]) for p in run.anytime.get("all", []) if field in p]
        if curve:
            joined = series.setdefault(run.label, [])
            joined += ([(None, None)] if joined else []) + curve
    return series


def _study_block(page: Page, study: Study, run_href: Callable[[Run], str], learner_href: Callable[[Run], str]) -> None:
    page.heading(study.title, anchor=study.anchor)
    page.note(study.axis())
    pages = {id(r): run_href(r) for r in study.runs}
    for part in study.parts:
        where = "" if part == "all" else f", sub-stream {part}"
        page.chart(charts.performance_chart(study.runs, part, pages, f"{study.title}{where}"), height=520)
    page.add(_table(compare_rows(study.runs), learner_href))
    series = _anytime_series(study.runs)
    if series:
        first = study.runs[0]
        page.chart(charts.anytime_chart(series, f"{study.title}: anytime curves (mid-schedule, dashed in the paper figure)",
                                        f"compute: {AXES[first.measure][1]}, training only (log)", "mean dev error",
                                        charts.colours(study.labels)), height=420)


def front_page(studies: list[Study], warnings: list[str], sources: list[str], run_href: Callable[[Run], str],
               learner_href: Callable[[Run], str], version: str) -> Page:
    page = Page("nevisbench report")
    count = sum(len(s.runs) for s in studies)
    page.note(f"{count} run(s) in {len(studies)} study(ies), read from {', '.join(sources)} by nevisbench {version}. "
              "Runs that are not comparable (other tasks, scenario, budget kind, compute measure or budget.x) are "
              "separate studies, never joined. Click a dot to open its run.")
    if warnings:
        page.add('<div class="warn"><b>Skipped or kept apart:</b><ul>'
                 + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul></div>")
    page.add("<ul>" + "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a> ({len(s.runs)} runs, '
                              f"{len(s.labels)} configurations)</li>" for s in studies) + "</ul>")
    for study in studies:
        _study_block(page, study, run_href, learner_href)
    return page


def learner_page(study: Study, label: str, run_href: Callable[[Run], str]) -> Page:
    """One configuration of one study: its curve, its runs, and its mean error per task and budget."""
    runs = [r for r in study.runs if r.label == label]
    page = Page(label, root="../")
    page.note(f"{study.title}. {study.axis()}")
    page.chart(charts.performance_chart(runs, "all", {id(r): "../" + run_href(r) for r in runs}, label), height=440)
    page.heading("Runs")
    page.add(table(["run", "seed", "budget", "compute", "error", "AUC", "audit flagged"],
                   [[cell(link("../" + run_href(r), r.run_dir.name), "html"), cell(str(r.seed)), cell(r.budget),
                     cell(r.x(), "flops"), cell(r.error), cell(r.auc), cell(", ".join(details.flagged(r)) or "-")]
                    for r in sorted(runs, key=lambda r: (r.budget_value, r.seed or 0))]))
    page.heading("Mean test error per task (over seeds), by budget")
    budgets = sorted({r.budget_value for r in runs})
    tasks = list(dict.fromkeys(t["task"] for r in runs for t in r.task_rows))
    body = []
    for task in tasks:
        means = []
        for budget in budgets:
            values = [t["test_error"] for r in runs if r.budget_value == budget for t in r.task_rows if t["task"] == task]
            means.append(cell(statistics.fmean(values) if values else None))
        body.append([cell(task), *means])
    names = {r.budget_value: r.budget for r in runs}
    page.add(table(["task", *(names[b] for b in budgets)], body))
    return page
