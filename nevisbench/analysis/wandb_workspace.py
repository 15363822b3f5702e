"""`nevisbench wandb-workspace --entity E --project P`: the study's curve where W&B users look.

A saved W&B workspace (a view of the project's runs), built with W&B's own `wandb-workspaces`
library from the names the logger writes (`nevisbench.run.store.loggers`, their one home):

- compute-performance: each run's point (summary `point/flops` against `final_mean_error`, log x),
  runs grouped by learner (`choices.learner`);
- per task: test error and training FLOPs against the stream's cumulative FLOPs (the step of every
  per-task metric), grouped by learner (mean and std band), and every task's own error;
- anytime: mid-schedule dev error against cumulative training FLOPs.

The definition is always built and validated here (the library's own model); it is created in W&B
only with an API key and without `--dry-run`. Otherwise the command prints what it would create.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from nevisbench.errors import ConfigError, RunFailed
from nevisbench.run.store.loggers import (
    ANYTIME_DEV_ERROR,
    ANYTIME_FLOPS,
    CUMULATIVE_FLOPS,
    FINAL_MEAN_ERROR,
    POINT,
    TASK_ERROR,
    TASK_TEST_ERROR,
    TASK_TRAIN_FLOPS,
)

__all__ = ["GROUP_BY", "INSTALL", "build_workspace", "describe", "workspace_command"]

INSTALL = 'pip install "nevisbench[wandb-workspace]"  (or: pip install wandb-workspaces)'
GROUP_BY = "choices.learner"  # the learner option, in the run config the sink logs


def _library() -> tuple[Any, Any]:
    try:
        import wandb_workspaces.reports.v2 as reports
        import wandb_workspaces.workspaces as workspaces
    except ImportError:
        raise ConfigError(f"nevisbench wandb-workspace needs W&B's wandb-workspaces library, which is not installed: "
                          f"{INSTALL}") from None
    return workspaces, reports


def build_workspace(entity: str, project: str, name: str) -> Any:
    """The workspace definition (a `wandb_workspaces.workspaces.Workspace`, not yet saved)."""
    for what, value in (("--entity", entity), ("--project", project), ("--name", name)):
        if not value.strip():
            raise ConfigError(f"{what} is empty; pass the W&B {what[2:]} the runs log to (logger.{what[2:]})")
    ws, wr = _library()
    learner = wr.Config(GROUP_BY)
    grouped: dict[str, Any] = {"groupby": learner, "groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}
    sections = [
        ws.Section(name="compute-performance", is_open=True, panels=[
            wr.ScatterPlot(title="final mean test error vs counted compute (one dot per run)", x=wr.SummaryMetric(f"{POINT}flops"),
                           y=wr.SummaryMetric(FINAL_MEAN_ERROR), log_x=True)]),
        ws.Section(name="per task", is_open=True, panels=[
            wr.LinePlot(title="test error per task vs cumulative FLOPs", x=CUMULATIVE_FLOPS, y=[TASK_TEST_ERROR], log_x=True,
                        **grouped),
            wr.LinePlot(title="training FLOPs per task", x=CUMULATIVE_FLOPS, y=[TASK_TRAIN_FLOPS], log_x=True, **grouped),
            wr.LinePlot(title="each task's test error", x=CUMULATIVE_FLOPS, metric_regex=f"{TASK_ERROR}.*", log_x=True)]),
        ws.Section(name="anytime", is_open=True, panels=[
            wr.LinePlot(title="anytime: dev error vs cumulative training FLOPs", x=ANYTIME_FLOPS, y=[ANYTIME_DEV_ERROR],
                        log_x=True, **grouped)]),
    ]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        runset_settings=ws.RunsetSettings(groupby=[ws.Config(GROUP_BY)]))


def describe(workspace: Any) -> dict[str, Any]:
    """The definition validated by the library (its internal model) and summarised: sections, panels
    and the metrics each draws."""
    model = workspace._to_model()  # the library's own validation (pydantic); raises on a bad definition
    spec = model.model_dump(by_alias=True, exclude_none=True)
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    return {"entity": workspace.entity, "project": workspace.project, "name": workspace.name,
            "group_by": GROUP_BY,
            "sections": [{"name": s["name"], "panels": [_panel(p) for p in s["panels"]]} for s in sections]}


def _panel(panel: dict[str, Any]) -> dict[str, Any]:
    config = panel.get("config", {})
    ys = config.get("metrics") or ([config["yAxis"]] if "yAxis" in config else [])
    if config.get("metricRegex"):
        ys = [f"/{config['metricRegex']}/"]
    return {"type": panel.get("viewType"), "title": config.get("chartTitle"), "x": config.get("xAxis"), "y": ys,
            "log_x": bool(config.get("xAxisLogScale") or config.get("xLogScale")), "group_by": config.get("groupBy")}


def workspace_command(args: argparse.Namespace, console: Console) -> None:
    workspace = build_workspace(args.entity, args.project, args.name)
    plan = describe(workspace)
    online = bool(os.environ.get("WANDB_API_KEY")) and os.environ.get("WANDB_MODE") not in ("offline", "disabled")
    verb = "Creating" if online and not args.dry_run else "Would create"
    console.print(f"{verb} the W&B workspace '{escape(args.name)}' in {escape(args.entity)}/{escape(args.project)} "
                  f"(validated locally with wandb-workspaces):", soft_wrap=True, highlight=False)
    console.print(json.dumps(plan, indent=2), soft_wrap=True, highlight=False, markup=False)
    if args.dry_run or not online:
        why = "--dry-run" if args.dry_run else "no WANDB_API_KEY (or WANDB_MODE is offline)"
        console.print(f"Not created ({why}); run it again online with an API key to create it.", soft_wrap=True, highlight=False)
        return
    try:
        workspace.save()
    except Exception as exc:  # the network, the key, the entity: W&B says which
        raise RunFailed(f"W&B did not take the workspace ({type(exc).__name__}: {str(exc)[:300]}); the definition "
                        "above is valid: check the entity, project and API key, and the network") from None
    console.print(f"Created: {escape(str(workspace.url))}", soft_wrap=True, highlight=False)
