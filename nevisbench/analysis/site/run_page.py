"""A run's page: per-task errors and compute, the compute breakdown by kind and measure, anytime
curves, the accuracy matrix (continual with revisits), search trials, the learner's reports (e.g.
learned_prune's structure per task), the meter's time audit, and provenance with the config's
difference from the study's other runs."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from nevisbench.analysis.runs import Run
from nevisbench.analysis.site import charts, details
from nevisbench.analysis.site.html import Page, cell, fmt, link, table

__all__ = ["run_page"]

_AUDIT_KEYS = ("ratio", "flagged", "reason", "cpu_seconds", "explained_seconds", "unexplained_seconds", "threshold")


def run_page(run: Run, difference: dict[str, Any], learner_href: str) -> Page:
    """`difference`: the config keys that differ between this run's study's runs, with this run's values."""
    page = Page(f"run {run.run_dir.name}", root="../")
    rows = details.task_rows(run)
    flagged = details.flagged(run)
    page.add(table(["", ""], [
        [cell("configuration"), cell(link(learner_href, run.label), "html")], [cell("study"), cell(f"{run.study}, {run.scenario}")],
        [cell("seed"), cell(str(run.seed))], [cell("budget"), cell(run.budget)],
        [cell("point"), cell(f"error {run.error:.4f} at {fmt(run.x(), 'flops' if run.measure != 'seconds' else 'seconds')} "
                             f"({run.measure}; x = {run.x_kinds}, budget.x)")],
        [cell("AUC (anytime)"), cell(run.auc)], [cell("folder"), cell(str(run.run_dir))]]))
    if flagged:
        page.note(f"The meter's time audit flagged {len(flagged)} task(s): {', '.join(flagged)} (more time than the "
                  "counted work explains; see the audit below)", css="warn flag")
    _tasks(page, rows)
    _breakdown(page, run)
    _anytime(page, run)
    _continual(page, run)
    _search(page, run)
    _reports(page, run)
    _audit(page, run)
    _provenance(page, run, difference)
    return page


def _tasks(page: Page, rows: list[dict[str, Any]]) -> None:
    page.heading("Tasks")
    headers = ["task", "domain", "metric", "test error", "dev_test error", "dev error", "steps", "train FLOPs",
               "eval FLOPs", "search FLOPs", "train FLOPs (executed)", "train seconds", "wall seconds", "audit ratio", "status"]
    body = []
    for r in rows:
        c = r["compute"]
        status = r["status"] + (f": {r['error'][:200]}" if r["error"] else "") + (" (audit flagged)" if r["flagged"] else "")
        body.append([cell(r["task"]), cell(r["domain"]), cell(r["metric"]), cell(r["test_error"]), cell(r["dev_test_error"]),
                     cell(r["dev_error"]), cell(r["steps"], "int"), cell(c["train"]["algorithmic"], "flops"),
                     cell(c["eval"]["algorithmic"], "flops"), cell(c["search"]["algorithmic"], "flops"),
                     cell(c["train"]["executed"], "flops"), cell(c["train"]["seconds"], "seconds"),
                     cell(r["wall_seconds"], "seconds"), cell(r["audit_ratio"]), cell(status)])
    page.add(table(headers, body))
    if any(r["test_error"] is not None for r in rows):
        page.chart(charts.task_chart(rows, "per task: test error and training FLOPs"), height=380)


def _breakdown(page: Page, run: Run) -> None:
    page.heading("Compute by kind and measure")
    page.note("The stream's tally: algorithmic FLOPs (sparsity-aware, the curve's default), executed FLOPs (what the "
              "hardware ran) and seconds, by kind. 'outside' is work counted outside the step windows (learner hooks, "
              "threads), already charged to training.")
    tally = details.breakdown(run.summary.get("flops"))
    page.add(table(["kind", "algorithmic", "executed", "seconds"],
                   [[cell(kind), cell(m["algorithmic"], "flops"), cell(m["executed"], "flops"), cell(m["seconds"], "seconds")]
                    for kind, m in tally.items()]))


def _anytime(page: Page, run: Run) -> None:
    records = details.anytime_records(run)
    if not records:
        return
    page.heading("Anytime curves")
    page.note("Dev error of the mid-schedule model at each milestone, against the task's training FLOPs so far "
              "(in transfer a mid-schedule model; in continual each task starts from the previous one).")
    page.chart(charts.anytime_chart(records, "anytime: dev error per task", "training FLOPs in the task (log)", "dev error"),
               height=380)
    curve = run.anytime.get("all")
    if curve:
        series = {"stream mean": [(p["flops"], p["mean_error"]) for p in curve]}
        page.chart(charts.anytime_chart(series, "anytime curve: mean dev error over tasks", "training FLOPs (log)",
                                        "mean dev error"), height=340)


def _continual(page: Page, run: Run) -> None:
    scores = details.continual(run)
    if scores is None:
        return
    page.heading("Accuracy matrix (continual, revisits)")
    page.add(table(["average accuracy", "backward transfer (BWT)", "forgetting"],
                   [[cell(scores["average_accuracy"]), cell(scores["backward_transfer"]), cell(scores["forgetting"])]]))
    size = max(320, 60 * len(scores["tasks"]) + 140)
    page.chart(charts.heatmap(scores["tasks"], scores["matrix"], "accuracy after training task i on task j"), height=size)


def _search(page: Page, run: Run) -> None:
    trials = details.search_trials(run)
    if not trials:
        return
    page.heading("Search trials")
    page.add(table(["task", "trial", "overrides", "dev error", "train FLOPs", "eval FLOPs", "status", "winner"],
                   [[cell(t["task"]), cell(str(t["trial"])), cell(json.dumps(t["overrides"], sort_keys=True)),
                     cell(t["dev_error"]), cell(t["train_flops"], "flops"), cell(t["eval_flops"], "flops"), cell(t["status"]),
                     cell("winner" if t["winner"] else "")] for t in trials]))


def _reports(page: Page, run: Run) -> None:
    reports = details.learner_reports(run)
    if not reports:
        return
    page.heading(f"What {run.learner} reports per task")
    for task, report in reports:
        page.heading(task, level=3)
        scalars = {k: v for k, v in report.items() if not isinstance(v, (dict, list))}
        page.add(table(["", ""], [[cell(k), cell(v)] for k, v in scalars.items()]))
        for key, value in report.items():
            per_unit = _per_unit(value)
            if per_unit:  # e.g. learned_prune's kept_channels: layer -> kept channels (per group)
                page.add(table(["", key], [[cell(k), cell(", ".join(f"{x:g}" for x in v))] for k, v in per_unit.items()]))
                page.chart(charts.bars({k: sum(v) for k, v in per_unit.items()}, f"{task}: {key}", key), height=300)
            elif isinstance(value, (dict, list)) and value:
                text = json.dumps(value, sort_keys=True, default=str)
                page.add(f"<details><summary>{escape(key)}</summary><pre>{escape(text[:20000])}</pre></details>")


def _per_unit(value: Any) -> dict[str, list[float]]:
    """A mapping of names to a number or a list of numbers (per layer, per group), as lists; else empty."""
    if not isinstance(value, dict) or not value:
        return {}
    out = {}
    for key, item in value.items():
        numbers = [details.number(x) for x in (item if isinstance(item, list) else [item])]
        if not numbers or any(x is None for x in numbers):
            return {}
        out[str(key)] = [x for x in numbers if x is not None]
    return out


def _audit(page: Page, run: Run) -> None:
    audits = details.audits(run)
    if not audits:
        return
    page.heading("The meter's time audit")
    page.note("Each task's measured CPU time against the time its counted work explains at rates the harness "
              "measured itself; a ratio above the threshold is flagged (work the meter did not see).")
    page.add(table(["task", *_AUDIT_KEYS], [[cell(task), *(cell(a.get(k), "seconds" if k.endswith("seconds") else "")
                                                          for k in _AUDIT_KEYS)] for task, a in audits]))


def _provenance(page: Page, run: Run, difference: dict[str, Any]) -> None:
    page.heading("Provenance")
    page.add(table(["", ""], [[cell(k), cell(str(v))] for k, v in details.provenance(run).items()]))
    page.heading("Config: what differs from the study's other runs", level=3)
    if difference:
        page.add(table(["key", "this run"], [[cell(k), cell(json.dumps(v, default=str))] for k, v in difference.items()]))
    else:
        page.note("Nothing: the study's runs share every config key.")
    config = "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in sorted(run.config.items()))
    page.add(f"<details><summary>the whole config (config.yaml, flattened)</summary><pre>{escape(config)}</pre></details>")
