"""Optional experiment trackers. Local results files are the source of truth; a tracker that
fails never stops a run (it warns once and carries on)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

__all__ = ["WandbSink", "make_sink"]


class WandbSink:
    """One W&B run per stream: config, per-task metrics against cumulative FLOPs, summary."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str, console: Console) -> None:
        import wandb

        self.console = console
        self._failed = False
        mode = cfg.logger.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.mode = mode
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group or cfg.choices.learner,
            name=run_name,
            config=OmegaConf.to_container(cfg, resolve=True),
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
        )
        self.run.define_metric("stream/cumulative_flops")
        self.run.define_metric("task/*", step_metric="stream/cumulative_flops")
        if mode == "offline":
            console.print(
                f"W&B offline run at [bold]{self.run.dir.removesuffix('/files')}[/]; "
                f"upload it later with `wandb sync {self.run.dir.removesuffix('/files')}`"
            )

    def lightning_logger(self) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(experiment=self.run)

    def _guard(self, action: str, fn: Any) -> None:
        if self._failed:
            return
        try:
            fn()
        except Exception as exc:  # a tracker must never kill a run
            self._failed = True
            self.console.print(f"[yellow]W&B {action} failed ({exc!r}); local results files remain the source of truth.[/]")

    def log_task(self, result: dict[str, Any]) -> None:
        metrics = {
            "stream/cumulative_flops": result["cumulative_flops"],
            "task/test_error": result["test_error"],
            "task/index": result["index"],
            "task/train_flops": result["flops"]["train"],
            "task/eval_flops": result["flops"]["eval"],
            "task/wall_seconds": result["wall_seconds"],
            f"task_error/{result['task']}": result["test_error"],
        }
        self._guard("logging", lambda: self.run.log(metrics))

    def finish(self, summary: dict[str, Any]) -> None:
        def _finish() -> None:
            for key in ("mean_test_error", "total_flops", "num_tasks"):
                self.run.summary[key] = summary[key]
            self.run.finish()

        self._guard("finishing", _finish)


def make_sink(cfg: DictConfig, run_dir: Path, run_name: str, console: Console) -> WandbSink | None:
    if cfg.logger.name != "wandb":
        return None
    try:
        return WandbSink(cfg, run_dir, run_name, console)
    except Exception as exc:
        console.print(f"[yellow]W&B could not start ({exc!r}); continuing with local results files only.[/]")
        return None
