"""Optional experiment trackers. Local results files are the source of truth; a tracker that
fails never stops a run (it warns once and carries on)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nevisbench.run.store.metric import StreamMetric, metric_scalars
from nevisbench.run.store.metrics import METRICS

if TYPE_CHECKING:
    from nevisbench.run.store.summary import Summary

__all__ = ["WandbSink", "make_sink", "summary_numbers", "wandb_mode", "CUMULATIVE_FLOPS", "TASK_TEST_ERROR",
           "TASK_TRAIN_FLOPS", "TASK_ERROR", "ANYTIME_FLOPS", "ANYTIME_DEV_ERROR", "POINT", "FINAL_MEAN_ERROR"]

# The W&B names the sink logs, spelled once: `nevisbench wandb-workspace` (analysis/wandb_workspace.py) draws them.
CUMULATIVE_FLOPS = "stream/cumulative_flops"  # the step of every per-task metric
TASK_TEST_ERROR, TASK_TRAIN_FLOPS = "task/test_error", "task/train_flops"
TASK_AUDIT_RATIO, TASK_AUDIT_FLAGGED = "task/audit_ratio", "task/audit_flagged"
TASK_ERROR = "task_error/"  # + the task's key: its test error
ANYTIME_FLOPS, ANYTIME_DEV_ERROR = "anytime/cumulative_train_flops", "anytime/dev_error"
POINT = "point/"  # + flops, flops_executed, seconds, x: the run's point on the curve (summary)
FINAL_MEAN_ERROR = "final_mean_error"  # the point's error (summary)



def wandb_mode(mode: str | None) -> Literal["online", "offline", "disabled"]:
    """`logger.mode` (checked against these three when the config is), or when it is unset: online
    with an API key, offline without one."""
    chosen = mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return cast(Literal["online", "offline", "disabled"], chosen)

class WandbSink:
    """One W&B run per stream: config, per-task metrics against cumulative FLOPs, summary."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str, console: Console) -> None:
        import wandb

        self.console = console
        self._failed = False
        mode = wandb_mode(cfg.logger.mode)
        self.mode = mode
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group or cfg.choices.learner,
            name=run_name,
            config=cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True)),
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
        )
        # FLOPs, not steps, are the x-axis of every nevisbench metric
        self.run.define_metric(CUMULATIVE_FLOPS)
        self.run.define_metric("task/*", step_metric=CUMULATIVE_FLOPS)
        self.run.define_metric(f"{TASK_ERROR}*", step_metric=CUMULATIVE_FLOPS)
        self.run.define_metric(ANYTIME_FLOPS)
        self.run.define_metric("anytime/*", step_metric=ANYTIME_FLOPS)
        self._train_flops_before = 0.0
        if mode == "offline":
            where = self.run.settings.sync_dir
            console.print(f"W&B offline run at {where}; upload it later with `wandb sync {where}`",
                          soft_wrap=True, highlight=False)

    def lightning_logger(self) -> Any:
        """Lightning's WandbLogger on this run; its failures go through the same warn-once guard."""
        from lightning.pytorch.loggers import WandbLogger

        sink = self

        class _GuardedWandbLogger(WandbLogger):
            def log_metrics(self, metrics: Any, step: Any = None) -> None:
                sink._guard("logging", lambda: WandbLogger.log_metrics(self, metrics, step))

        return _GuardedWandbLogger(experiment=self.run)

    def _guard(self, action: str, fn: Any) -> None:
        if self._failed:
            return
        try:
            fn()
        except Exception as exc:  # a tracker must never kill a run
            self._failed = True
            self.console.print(f"[yellow]W&B {action} failed ({exc!r}); local results files remain the source of truth.[/]", soft_wrap=True)

    def log_task(self, result: dict[str, Any]) -> None:
        metrics = {
            CUMULATIVE_FLOPS: result["cumulative_flops"],
            TASK_TEST_ERROR: result["test_error"],
            "task/index": result["index"],
            TASK_TRAIN_FLOPS: result["flops"]["train"],
            "task/eval_flops": result["flops"]["eval"],
            "task/wall_seconds": result["wall_seconds"],
            f"{TASK_ERROR}{result['task']}": result["test_error"],
        }
        rows = [{
            ANYTIME_FLOPS: self._train_flops_before + record["train_flops"],
            ANYTIME_DEV_ERROR: record["dev_error"],
            "anytime/task_index": result["index"],
            "anytime/fraction": record["fraction"],
        } for record in result.get("anytime", [])]
        self._train_flops_before += result["flops"]["train"]
        search = result.get("search")
        if search:
            metrics["task/search_flops"] = result["flops"]["search"]
        audit = result.get("audit") or {}
        if isinstance(audit.get("ratio"), (int, float)):  # the time audit: real vs counted compute, and its flag
            metrics[TASK_AUDIT_RATIO] = audit["ratio"]
            metrics[TASK_AUDIT_FLAGGED] = int(bool(audit.get("flagged")))

        def _log() -> None:
            for row in rows:
                self.run.log(row)
            if search:
                self.run.log({"search/trials": _trials_table(result["task"], search)})
            self.run.log(metrics)

        self._guard("logging", _log)

    def finish(self, summary: Summary, metrics: Sequence[StreamMetric] = METRICS) -> None:
        """The run's summary numbers, and each metric's scalars as `<metric>/<scalar>`."""
        def _finish() -> None:
            import wandb

            for key, value in summary_numbers(summary, metrics).items():
                self.run.summary[key] = value
            curve = summary.scores.anytime.anytime_curve if summary.scores.anytime is not None else []
            if curve:
                columns = ["flops", "mean_error", "flops_executed", "seconds"]
                table = wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in curve])  # type: ignore[arg-type]  # wandb wants list[str | int] (invariant)
                self.run.log({
                    "anytime_curve_points": table,
                    "anytime_curve": wandb.plot.line(table, "flops", "mean_error",
                                                     title="anytime curve (mid-schedule dev error)"),
                })
            self.run.finish()

        self._guard("finishing", _finish)


def summary_numbers(summary: Summary, metrics: Sequence[StreamMetric] = METRICS) -> dict[str, Any]:
    """The W&B summary keys of a run and their values (None: the run has no such number)."""
    scores = summary.scores
    out: dict[str, Any] = {"mean_test_error": summary.mean_test_error, "total_flops": summary.total_flops,
                           "num_tasks": summary.num_tasks}
    if scores.anytime is not None:
        out["auc"] = scores.anytime.auc
    out |= {key: getattr(scores, key) for key in _FINAL_MEANS} | {"dev_test_mean_error": scores.dev_test_mean_error}
    # the architecture that ran (name, arch, params, source)
    out |= {f"backbone/{key}": value for key, value in summary.backbone.items()}
    point = scores.point or {}
    # x of this run on the compute-performance curve; x: the compute kinds it sums (budget.x)
    out |= {f"{POINT}{key}": point[key] for key in ("flops", "flops_executed", "seconds", "x") if key in point}
    for name, group in (scores.sub_streams or {}).items():
        if group.anytime is not None:
            out[f"{name}/auc"] = group.anytime.auc
        out |= {f"{name}/{key}": getattr(group, key) for key in _FINAL_MEANS}
    for section, scalar in metric_scalars(metrics):
        if section in summary.sections:
            out[f"{section}/{scalar}"] = summary.sections[section].get(scalar)
    return out


_FINAL_MEANS = (FINAL_MEAN_ERROR, "final_mean_top1_error", "final_mean_map_error")
SEARCH_COLUMNS = ["task", "trial", "overrides", "dev_error", "train_flops", "eval_flops", "status", "winner"]


def _trials_table(task: str, search: dict[str, Any]) -> Any:
    """A task's hyperparameter-search trials as a W&B table (one row per trial)."""
    import wandb  # (loaded only when W&B logging is on: it is slow to import)

    rows = [[task, t["trial"], json.dumps(t["overrides"], sort_keys=True), t["dev_error"], t["train_flops"],
             t["eval_flops"], t["status"], t["trial"] == search["winner"]] for t in search["trials"]]
    return wandb.Table(columns=SEARCH_COLUMNS, data=rows)  # type: ignore[arg-type]  # wandb wants list[str | int] (invariant)


def make_sink(cfg: DictConfig, run_dir: Path, run_name: str, console: Console) -> WandbSink | None:
    if cfg.logger.name != "wandb":
        return None
    try:
        return WandbSink(cfg, run_dir, run_name, console)
    except Exception as exc:
        console.print(f"[yellow]W&B could not start ({exc!r}); continuing with local results files only.[/]")
        return None
