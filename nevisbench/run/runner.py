"""The stream runner: feeds a stream's tasks, in order, to a learner. It owns the scenario, the FLOP
meter, the results store and the loggers; a learner only builds the module of each task."""

from __future__ import annotations

import io
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from rich.console import Console

from nevisbench.analysis.summary import summarize
from nevisbench.api.learner import Learner
from nevisbench.api.types import TaskInfo
from nevisbench.compute.flops import FlopMeter, FlopTally
from nevisbench.config import to_yaml
from nevisbench.errors import DataError, PluginError, RunFailed, RunInterrupted, TaskFailed
from nevisbench.registry import get_learner_class
from nevisbench.run._faults import crash_point
from nevisbench.run.backbones import build_backbone
from nevisbench.run.callbacks import (
    CheckpointCallback, FiniteLossCallback, FlopMeterCallback, ScheduleCallback, TaskPlan, milestone_fractions,
)
from nevisbench.run.evaluation import evaluate
from nevisbench.run.loggers import make_sink
from nevisbench.run.plugin import build_learner, plugin_hook
from nevisbench.run.report import print_warning, summary_table, task_table
from nevisbench.run.results import ResultsStore
from nevisbench.run.run_folder import RunFolder, check_prepared
from nevisbench.run.scenario import Scenario
from nevisbench.run.selection import BestDevSelection
from nevisbench.run.task_result import TaskResult, peak_memory, throughput
from nevisbench.run.trainer import (
    make_loaders, make_trainer, quiet_lightning, resolve_precision, training_device, use_channels_last,
)
from nevisbench.tasks import get_stream
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import BatchLoader, TaskData

__all__ = ["run", "StreamRunner", "resolve_precision", "summarize"]


def run(cfg: DictConfig, console: Console | None = None) -> Path:
    """Run the configured learner over the configured stream; return the run folder.

    With `cfg.resume` set, continue that run: finished tasks are kept as they are, the learner's
    state, the carried backbone and the stream's FLOP counts are restored from the state saved after
    the last finished task, and an interrupted task restarts from its last mid-task checkpoint.
    """
    console = console or Console()
    quiet_lightning()
    stream = get_stream(cfg.stream.name).select(list(cfg.stream.tasks) if cfg.stream.tasks else None)
    stream, skipped = check_prepared(stream, cfg, console)
    get_learner_class(cfg.learner.name)  # fail on a broken plugin before creating anything
    L.seed_everything(cfg.seed, verbose=False)
    backbone, feature_dim = build_backbone(cfg.backbone.name, cfg.backbone.weights)  # bad weights: no folder left behind
    if cfg.resume:
        folder = RunFolder.reopen(Path(cfg.resume), [t.key for t in stream.tasks])
        if folder.done:
            folder.release()
            console.print(f"Run {folder.path} is already finished; nothing to do.")
            return folder.path
        console.print(f"Resuming [cyan]{folder.name}[/]: {len(folder.finished)} of {len(stream.tasks)} tasks finished.")
    else:
        folder = RunFolder.create(cfg, to_yaml(cfg))
    try:
        runner = StreamRunner(cfg, backbone=backbone, feature_dim=feature_dim, store=folder.store, console=console)
        runner.announce(stream)
        results = runner.restore(folder.finished)
        try:
            for index, spec in enumerate(stream.tasks[len(results):], start=len(results)):
                result = runner.run_task(spec, index)
                results.append(result)
                console.print(task_table(result, len(stream.tasks)))
                if result["status"] == "failed":
                    print_warning(console, result["error"])
                    if cfg.on_failure == "stop":
                        raise RunFailed(f"{result['error']}. The stream stopped (on_failure=stop); finished "
                                        f"results are in {folder.path}. Fix the cause and resume with: "
                                        f"nevisbench run resume={folder.path}, or run with on_failure=skip")
        except KeyboardInterrupt:
            raise RunInterrupted(folder.path, sum(r["status"] == "ok" for r in results)) from None
        summary = summarize(cfg, folder.name, results, runner.meter.stream.as_dict(), skipped=skipped)
        folder.store.write_summary(summary)
        folder.store.clear_state()  # a finished run needs no resume state
        if runner.sink is not None:
            runner.sink.finish(summary)
    finally:
        folder.release()
    console.print(summary_table(summary))
    console.print(f"Results: {folder.path}")
    return folder.path


def _protocol(cfg: DictConfig, key: str, default: Any) -> Any:
    """A setting of the evaluation protocol (`protocol=nevis|fast`)."""
    protocol = cfg.get("protocol")
    return protocol.get(key, default) if protocol is not None else default


def task_info(spec: TaskSpec, index: int) -> TaskInfo:
    return TaskInfo(key=spec.key, name=spec.name, index=index, domain=spec.domain,
                    num_classes=spec.num_classes, multi_label=spec.multi_label)


class StreamRunner:
    """The state of one run across its tasks: the learner, the scenario, the meter, the store."""

    def __init__(self, cfg: DictConfig, *, backbone: torch.nn.Module, feature_dim: int, store: ResultsStore,
                 console: Console, learner: Learner | None = None) -> None:
        self.cfg, self.store, self.console = cfg, store, console
        self.name = cfg.learner.name
        self.learner = learner or build_learner(cfg, feature_dim)
        with plugin_hook(self.name, "prepare()"):
            prepared = self.learner.prepare(backbone)
        self.scenario = Scenario(cfg.scenario, prepared, learner_name=self.name)
        self.meter = FlopMeter()
        self.precision = resolve_precision(cfg)
        self.device = training_device(cfg)
        self.sink = make_sink(cfg, store.run_dir, store.run_dir.name, console)
        self._learner_state: dict[str, Any] = self._saveable_learner_state()

    def announce(self, stream: Any) -> None:
        cfg = self.cfg
        self.console.print(f"[bold]nevisbench[/] run [cyan]{self.store.run_dir.name}[/]: learner={cfg.choices.learner} "
                           f"stream={stream.name} ({len(stream.tasks)} tasks) scenario={cfg.scenario} "
                           f"backbone={cfg.backbone.name} precision={self.precision} -> {self.store.run_dir}")
        if cfg.backbone.weights == "none":
            print_warning(self.console, f"backbone.weights=none: {cfg.backbone.name} starts from RANDOM initialisation, "
                                        "not pretrained weights (fine for the demo, not the paper's protocol).")

    def restore(self, finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pick up after the last committed task: learner state, carried backbone, stream FLOPs."""
        if finished:
            path, state = self.store.load_task_state(len(finished) - 1)
            try:
                self.meter.stream = FlopTally(**state["meter"])
                self.scenario.load_state_dict(state["scenario"])
            except (KeyError, TypeError, RuntimeError, ValueError) as exc:
                raise DataError(f"Cannot resume: the state file {path} is damaged ({exc!r}); the run can be "
                                "restarted, not resumed") from None
            with plugin_hook(self.name, "load_state_dict()"):
                self.learner.load_state_dict(state["learner"])
            self._learner_state = state["learner"]
        return list(finished)

    def run_task(self, spec: TaskSpec, index: int) -> dict[str, Any]:
        """Train and score one task, commit its results line, and return it."""
        cfg, task, seed = self.cfg, task_info(spec, index), self.cfg.seed + index
        L.seed_everything(seed, verbose=False)
        data = self._load(spec, seed)
        with plugin_hook(self.name, f"begin_task({task.key})"):
            module = self.learner.begin_task(task, self.scenario.start())
        if not isinstance(module, L.LightningModule):
            raise PluginError(f"Learner '{self.name}'.begin_task must return a LightningModule, got {type(module).__name__}")
        self.meter.start_task()
        loaders = make_loaders(data, cfg, self.device, seed)
        module = self._placed(module)
        budget = cfg.budget
        plan = TaskPlan(measure=budget.measure, max_steps=cfg.train.max_steps, budget=budget.flops_per_task,
                        fractions=milestone_fractions(budget.milestones, budget.first_milestone))
        selection = BestDevSelection(enabled=_protocol(cfg, "selection", "last") == "best_dev")

        def evaluate_dev() -> float:
            error = self._evaluate(module, task, loaders["dev"], trainer)
            selection.consider(module, error, int(trainer.global_step))
            return error

        callbacks = [
            FlopMeterCallback(self.meter),
            FiniteLossCallback(task.key),
            ScheduleCallback(self.meter, plan, evaluate_dev, steps_per_epoch=len(loaders["train"])),
            CheckpointCallback(self.store.task_checkpoint(index), cfg.train.checkpoint_every_n_steps, loaders["train"]),
            selection,
        ]
        trainer = make_trainer(cfg, precision=self.precision, device=self.device, steps_per_epoch=len(loaders["train"]),
                               budgeted=plan.budget is not None, callbacks=callbacks, root_dir=str(self.store.run_dir),
                               logger=self.sink.lightning_logger() if self.sink is not None else False)
        start = time.perf_counter()
        failure = self._fit(trainer, module, loaders["train"], task, index)
        selected = selection.restore(module) if failure is None else {"rule": "none"}
        scores = {name: self._evaluate(module, task, loaders[name], trainer) if failure is None and name in loaders else None
                  for name in ("dev_test", "test")}
        wall = time.perf_counter() - start
        failure = failure or self._end_task(task, module)
        tally = self.meter.end_task()
        result = TaskResult(
            task=task.key, index=index, domain=task.domain, num_classes=task.num_classes,
            metric="1-mAP" if task.multi_label else "top1_error", test_error=scores["test"],
            dev_test_error=scores["dev_test"], selected=selected,
            dev_error=selected.get("dev_error", plan.records[-1]["dev_error"] if plan.records else None),
            steps=int(trainer.global_step),
            flops=tally.as_dict(), cumulative_flops=self.meter.stream.total, anytime=plan.records, wall_seconds=wall,
            throughput=throughput(tally, int(trainer.global_step) * cfg.data.batch_size, self.device, self.precision,
                                  cfg.trainer.peak_flops),
            peak_memory_bytes=peak_memory(self.device), data_on_device=loaders["train"].images.device == self.device,
            num_train=len(data.train), num_test=len(data.test), status="ok" if failure is None else "failed",
            error=failure, budget=_budget_record(plan, tally))
        return self._commit(index, result)

    # -- the steps of a task ---------------------------------------------------------------------
    def _load(self, spec: TaskSpec, seed: int) -> TaskData:
        data = spec.load(root=os.path.expanduser(self.cfg.data.root), image_size=self.cfg.data.image_size, seed=seed)
        data.validate()
        stored = int(data.train.images.shape[-1])
        if spec.requires_data and stored < self.cfg.data.image_size:
            print_warning(self.console, f"task '{spec.key}' was prepared at {stored} px but data.image_size="
                                        f"{self.cfg.data.image_size}: images are upsampled. Prepare it with --size "
                                        f"{self.cfg.data.image_size} --force for full detail.")
        return data

    def _placed(self, module: L.LightningModule) -> L.LightningModule:
        if use_channels_last(self.cfg, self.device):
            module = module.to(memory_format=torch.channels_last)
        if self.cfg.trainer.compile:
            module.compile()  # in place: the module keeps its type, names and parameters
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return module

    def _evaluate(self, module: L.LightningModule, task: TaskInfo, loader: BatchLoader, trainer: L.Trainer) -> float:
        try:
            with plugin_hook(self.name, f"forward() while evaluating {task.key}"):
                return evaluate(module, loader, self.meter, num_classes=task.num_classes, multi_label=task.multi_label,
                                forward_context=trainer.precision_plugin.forward_context)
        except PluginError as exc:
            if str(exc).startswith("Learner '"):
                raise
            raise PluginError(f"Learner '{self.name}' on task {task.key}: {exc}") from exc

    def _fit(self, trainer: L.Trainer, module: L.LightningModule, loader: BatchLoader, task: TaskInfo, index: int) -> str | None:
        """Train; return the failure message of a task stopped by a bad loss, None when it finished."""
        checkpoint = self.store.task_checkpoint(index)
        if checkpoint.exists():
            self.store.check_checkpoint(checkpoint)
        try:
            with plugin_hook(self.name, f"training on {task.key}"):
                trainer.fit(module, train_dataloaders=loader, weights_only=True,
                            ckpt_path=str(checkpoint) if checkpoint.exists() else None)
        except TaskFailed as exc:
            return str(exc)
        except SystemExit:
            # Lightning turns Ctrl-C into graceful shutdown + sys.exit(1), ignoring further SIGINTs
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        return None

    def _end_task(self, task: TaskInfo, module: L.LightningModule) -> str | None:
        """The learner's end_task and the scenario's hand-over; a failure is recorded, not lost."""
        try:
            with plugin_hook(self.name, f"end_task({task.key})"):
                self.learner.end_task(task, module)
            self.scenario.finish(module)
            self._learner_state = self._saveable_learner_state()
        except PluginError as exc:
            return str(exc)
        return None

    def _saveable_learner_state(self) -> dict[str, Any]:
        """The learner's state, checked to survive a save and a safe reload now rather than at resume."""
        with plugin_hook(self.name, "state_dict()"):
            state = self.learner.state_dict()
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            torch.load(buffer, weights_only=True)
        return state

    def _commit(self, index: int, result: TaskResult) -> dict[str, Any]:
        # commit order: the state after this task first, then its results line (the commit point);
        # a crash in between leaves the line missing and the previous state in place
        line = result.to_dict()
        self.store.save_task_state(index, {"learner": self._learner_state, "scenario": self.scenario.state_dict(),
                                           "meter": asdict(self.meter.stream)})
        self.store.append(line)
        crash_point(f"after_task:{index}")
        self.store.prune_state(index)
        if self.sink is not None:
            self.sink.log_task(line)
        return line


def _budget_record(plan: TaskPlan, tally: FlopTally) -> dict[str, Any] | None:
    if plan.budget is None:
        return None
    spent = tally.measure(plan.measure, "train")
    return {"flops_per_task": plan.budget, "measure": plan.measure, "spent": spent, "ratio": spent / plan.budget}
