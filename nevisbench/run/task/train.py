"""One task's training: `TaskTrainer` loads the task's data, trains a trial (the task's module built
by the learner, placed on the device, fitted under the FLOP meter with the task plan's callbacks,
its selected model kept), evaluates, and rebuilds a search's winning model. It owns no state across
tasks: `TaskStart` (what a task's training starts from) is handed to it by the stream runner, or by
a search worker from the task's kit (`nevisbench.run.search.execute.trial_job`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from omegaconf import DictConfig
from rich.console import Console

from nevisbench.api.learner import Learner, clone_module
from nevisbench.api.schedule import PLAN_ATTRIBUTE
from nevisbench.api.types import TaskInfo
from nevisbench.compute.flops import FlopMeter, counting_outside
from nevisbench.config.search_space import trial_config
from nevisbench.errors import PluginError, TaskFailed
from nevisbench.registry import is_builtin
from nevisbench.run.learner.data import StreamData
from nevisbench.run.learner.plugin import build_learner, plugin_hook
from nevisbench.run.learner.scenario import Scenario
from nevisbench.run.store._faults import crash_point
from nevisbench.run.store.loggers import WandbSink
from nevisbench.run.store.report import print_warning
from nevisbench.run.store.results import ResultsStore
from nevisbench.run.task.callbacks import (
    CheckpointCallback,
    FiniteLossCallback,
    FlopMeterCallback,
    PlanCallback,
    PruneCallback,
    TaskPlan,
    milestone_fractions,
)
from nevisbench.run.task.evaluation import evaluate, unseen_weight_writes
from nevisbench.run.task.lightning import (
    compile_module,
    eval_phase,
    make_loaders,
    make_trainer,
    resolve_precision,
    training_device,
    use_channels_last,
)
from nevisbench.run.task.plan import nevis_batch_size, nevis_epoch_steps
from nevisbench.run.task.selection import BestDevSelection, LinearValidation
from nevisbench.run.task.trial import Trial, budget_record
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import BatchLoader, TaskData

if TYPE_CHECKING:  # a trial is told which search it belongs to; the search room imports this one
    from nevisbench.run.search.study import TaskSearch

__all__ = ["TaskStart", "TaskTrainer", "task_info", "task_config"]


def task_info(spec: TaskSpec, index: int) -> TaskInfo:
    return TaskInfo(key=spec.key, name=spec.name, index=index, domain=spec.domain,
                    num_classes=spec.num_classes, multi_label=spec.multi_label)


def task_config(cfg: DictConfig, examples: int) -> DictConfig:
    """`cfg` as a task of `examples` training examples trains with it: under
    `protocol.batch_size=nevis_rule` its `data.batch_size` is dm_nevis's rule for that task."""
    if cfg.protocol.batch_size != "nevis_rule":
        return cfg
    out = cfg.copy()
    out.data.batch_size = nevis_batch_size(examples)
    return out


def task_plan(cfg: DictConfig, examples: int) -> TaskPlan:
    """The plan of a task of `examples` training examples trained with `cfg`."""
    return TaskPlan(measure=cfg.budget.measure, max_steps=cfg.train.max_steps, budget=cfg.budget.flops_per_task,
                    fractions=milestone_fractions(cfg.budget.milestones, cfg.budget.first_milestone),
                    epoch_steps=nevis_epoch_steps(examples, int(cfg.data.batch_size)))


@dataclass
class TaskStart:
    """What a task's training starts from (picklable: a search worker receives it in the task's kit)."""

    cfg: DictConfig
    learner: Learner  # the run's learner after the tasks so far
    scenario: Scenario  # its starting backbones
    feature_dim: int | None
    start_backbone: torch.nn.Module | None  # the run's starting backbone, when the search space names learner.* keys
    learner_state: dict[str, Any]  # the learner's state after the tasks so far
    data: StreamData | None = None  # the training examples a learner may draw (context.data)


class TaskTrainer:
    """Trains the trials of one task from `start`, charging the FLOP `meter`; `ranks` collects the
    processes a DDP fit launches (the stream runner's list, so they are known even if a task fails)."""

    def __init__(self, start: TaskStart, *, store: ResultsStore, console: Console, meter: FlopMeter,
                 sink: WandbSink | None = None, ranks: list[Any] | None = None) -> None:
        self.start, self.cfg, self.store, self.console, self.meter, self.sink = start, start.cfg, store, console, meter, sink
        self.name = start.cfg.learner.name
        self.precision = resolve_precision(start.cfg)
        self.device = training_device(start.cfg)
        self.ranks: list[Any] = ranks if ranks is not None else []

    # -- the steps of a task ---------------------------------------------------------------------
    def load(self, spec: TaskSpec, seed: int) -> TaskData:
        data = spec.load(root=os.path.expanduser(self.cfg.data.root), image_size=self.cfg.data.image_size, seed=seed)
        data.validate()
        stored = int(data.train.images.shape[-1])
        if spec.requires_data and stored < self.cfg.data.image_size:
            print_warning(self.console, f"task '{spec.key}' was prepared at {stored} px but data.image_size="
                                        f"{self.cfg.data.image_size}: images are upsampled. Prepare it with --size "
                                        f"{self.cfg.data.image_size} --force for full detail.")
        return data

    def place(self, module: L.LightningModule) -> L.LightningModule:
        if use_channels_last(self.cfg, self.device):
            module = module.to(memory_format=torch.channels_last)
        if self.cfg.trainer.compile:
            compile_module(module)  # in place: the module keeps its type, names and parameters
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return module

    def evaluate(self, module: torch.nn.Module, task: TaskInfo, loader: BatchLoader, trainer: L.Trainer,
                 split: str = "dev") -> float:
        """The module's error on `loader` (task `split`), charged to the task's `eval`; outputs that
        are not finite fail the task (TaskFailed)."""
        before = (self.meter.task.eval, self.meter.task.executed_eval)
        watch = contextlib.nullcontext() if is_builtin(self.name) else unseen_weight_writes(module, f"the {split} evaluation of {task.key}")
        with watch, plugin_hook(self.name, f"forward() while evaluating {task.key}"):
            try:
                error = evaluate(
                    module,
                    eval_phase(trainer, loader),
                    self.meter,
                    num_classes=task.num_classes,
                    multi_label=task.multi_label,
                    forward_context=trainer.precision_plugin.forward_context,
                    split=split,
                )
            except PluginError as exc:  # the evaluation's check of what forward() returned: name learner and task
                raise PluginError(f"Learner '{self.name}' on task {task.key}: {exc}") from exc
            except TaskFailed as exc:
                diverged = (f"; after training step {trainer.global_step} the training diverged: lower the learning rate "
                            "(train.lr)") if trainer.training else ""
                raise TaskFailed(f"task '{task.key}': {exc}{diverged}") from None
        if trainer.world_size == 1:
            return error
        # DDP: every rank evaluated its replica; the evaluation is charged once, at the largest
        # count any rank made (a module cannot hide work on the ranks whose meters are not
        # written), and rank 0's score is everyone's, so every decision taken from it (milestone
        # model, search winner) is the same on every rank
        spent = torch.tensor(
            [self.meter.task.eval - before[0], self.meter.task.executed_eval - before[1]],
            dtype=torch.float64,
            device=trainer.strategy.root_device,
        )
        most = trainer.strategy.reduce(spent.clone(), reduce_op="max").tolist()
        self.meter.task.eval += most[0] - float(spent[0])
        self.meter.task.executed_eval += most[1] - float(spent[1])
        return trainer.strategy.broadcast(error, src=0)

    def test_scores(self, winner: Trial, task: TaskInfo) -> tuple[dict[str, float | None], str | None]:
        """The winner's dev_test and test errors, and why they are not scored (outputs that are not finite)."""
        scores: dict[str, float | None] = {"dev_test": None, "test": None}
        try:
            for name in scores:
                if winner.failure is None and name in winner.loaders:
                    scores[name] = self.evaluate(winner.module, task, winner.loaders[name], winner.trainer, name)
        except TaskFailed as exc:
            return {name: None for name in scores}, str(exc)
        return scores, None

    def scored_on_dev(self, module: L.LightningModule, task: TaskInfo, loader: BatchLoader,
                      trainer: L.Trainer) -> tuple[float | None, str | None]:
        """The module's dev error, or why it failed (outputs that are not finite)."""
        try:
            return self.evaluate(module, task, loader, trainer), None
        except TaskFailed as exc:
            return None, str(exc)

    def fit(self, trainer: L.Trainer, module: L.LightningModule, loader: BatchLoader, task: TaskInfo, checkpoint: Path) -> str | None:
        """Train; return the failure message of a task stopped by a bad loss, None when it finished."""
        if checkpoint.exists():
            self.store.check_checkpoint(checkpoint)
        loader.indices = bool(getattr(module, "batch_indices", False))  # the module's opt-in: (x, y, indices) batches
        try:
            with plugin_hook(self.name, f"training on {task.key}"):
                try:
                    trainer.fit(
                        module, train_dataloaders=loader, weights_only=True, ckpt_path=str(checkpoint) if checkpoint.exists() else None
                    )
                finally:
                    if not self.ranks:
                        self.ranks.extend(getattr(trainer.strategy.launcher, "procs", None) or [])
        except TaskFailed as exc:
            return str(exc)
        except SystemExit:
            # Lightning turns Ctrl-C into graceful shutdown + sys.exit(1), ignoring further SIGINTs
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        return None

    # -- one trial -------------------------------------------------------------------------------
    def train_trial(self, search: TaskSearch, task: TaskInfo, k: int, data: TaskData, seed: int, overrides: dict[str, Any]) -> Trial:
        """One trial (the task's only one with search=none): the task's module built with the
        trial's config, fitted with its own task tally, its selected (best-dev or last) model kept."""
        cfg = task_config(trial_config(self.cfg, overrides) if overrides else self.cfg, len(data.train))
        learner, start = self.trial_start(cfg, task.index) if search.enabled else (self.start.learner, self.start.scenario.start())
        with plugin_hook(self.name, f"begin_task({task.key})"):
            module = learner.begin_task(task, start)
        if not isinstance(module, L.LightningModule):
            raise PluginError(f"Learner '{self.name}'.begin_task must return a LightningModule, got {type(module).__name__}")
        self.meter.start_task()
        loaders = make_loaders(data, cfg, self.device, seed)
        module = self.place(module)
        plan = task_plan(cfg, len(data.train))
        setattr(module, PLAN_ATTRIBUTE, plan)  # the plan handed to the module: its LR schedule reads the planned steps
        selection = BestDevSelection(enabled=cfg.protocol.selection == "best_dev")
        held: list[L.Trainer] = []  # the trainer, once made (the evaluations read its step)
        callbacks, linear, pruning = self.trial_callbacks(cfg, search, k, task, module, loaders, plan, selection, len(data.train), held)
        trainer = make_trainer(
            cfg,
            precision=self.precision,
            device=self.device,
            steps_per_epoch=len(loaders["train"]),
            budgeted=plan.budget is not None,
            callbacks=callbacks,
            root_dir=str(self.store.run_dir),
            logger=self.sink.lightning_logger() if self.sink is not None else False,
        )
        held.append(trainer)
        began = time.perf_counter()
        crash_point(f"trial:{task.index}:{k}")
        failure = self.fit(trainer, module, loaders["train"], task, search.checkpoint(k))
        with plugin_hook(self.name, f"load_state_dict() restoring the selected model of {task.key}"):  # counted
            selected: dict[str, Any] = selection.restore(module) if failure is None else {"rule": "none"}
        dev_error = selected.get("dev_error", plan.records[-1]["dev_error"] if plan.records else None)
        if linear is not None and linear.final_error is not None:
            dev_error = linear.final_error  # dm_nevis ranks a trial by its last validation (it scores the best-dev model)
        if search.enabled and failure is None and dev_error is None:  # no milestone: the trial is scored on dev now
            dev_error, failure = self.scored_on_dev(module, task, loaders["dev"], trainer)
        return Trial(
            k=k,
            overrides=overrides,
            cfg=cfg,
            learner=learner,
            module=module,
            trainer=trainer,
            loaders=loaders,
            anytime=plan.records,
            selected=selected,
            dev_error=dev_error,
            failure=failure,
            tally=self.meter.task.copy(),
            steps=int(trainer.global_step),
            pruned=pruning.pruned,
            budget=budget_record(plan, self.meter.task),
            seconds=time.perf_counter() - began,
        )

    def trial_callbacks(
        self,
        cfg: DictConfig,
        search: TaskSearch,
        k: int,
        task: TaskInfo,
        module: L.LightningModule,
        loaders: dict[str, BatchLoader],
        plan: TaskPlan,
        selection: BestDevSelection,
        examples: int,
        held: list[L.Trainer],
    ) -> tuple[list[L.Callback], LinearValidation | None, PruneCallback]:
        """A trial's callbacks: the meter, the loss guard, the task plan (its anytime milestones), the
        linear validations of best-dev selection (`protocol.validate_every_n_steps`; without them the
        milestones feed the selection), the pruner, the mid-task checkpoint and the selection."""
        every = int(cfg.protocol.validate_every_n_steps) if selection.enabled else 0
        seen: dict[int, float] = {}  # the dev error of the latest step evaluated (a milestone and a validation share it)

        def evaluate_dev() -> float:
            step = int(held[0].global_step)
            if step not in seen:
                seen.clear()
                seen[step] = self.evaluate(module, task, loaders["dev"], held[0])
            return seen[step]

        def milestone_dev() -> float:  # the anytime curve
            error = evaluate_dev()
            if not every:
                selection.consider(module, error, int(held[0].global_step))
            return error

        def validate() -> float:
            error = evaluate_dev()
            selection.consider(module, error, int(held[0].global_step))
            return error

        pruning = PruneCallback(search, plan)
        linear = LinearValidation(every, validate, self.meter) if every else None
        return (
            [
                FlopMeterCallback(self.meter),
                FiniteLossCallback(task.key),
                PlanCallback(
                    self.meter,
                    plan,
                    milestone_dev,
                    steps_per_epoch=len(loaders["train"]),
                ),
                *([linear] if linear else []),  # after the schedule's milestone evaluation (it may reuse it)
                *([pruning] if search.pruning else []),  # after the milestone's evaluation, before the mid-task checkpoint
                CheckpointCallback(search.checkpoint(k), cfg.train.checkpoint_every_n_steps, loaders["train"]),
                selection,
            ],
            linear,
            pruning,
        )

    def trial_start(self, cfg: DictConfig, index: int) -> tuple[Learner, torch.nn.Module]:
        """The learner of one search trial and the backbone it begins from.

        Without `learner.*` keys in the space: a copy of the run's (prepared) learner reading the
        trial's `train` section, and a copy of the scenario's starting backbone. With them: a fresh
        learner built from the trial's config and prepared on a copy of the run's starting backbone
        (so keys that only `prepare()` reads, e.g. a sparsity, take effect), given the run's learner
        state after the tasks so far; it begins from the backbone its `prepare()` returned, except in
        `continual` after the first task, where every trial begins from the carried backbone."""
        start = self.start
        if start.start_backbone is None:
            learner = copy.deepcopy(start.learner)
            learner.context = dataclasses.replace(learner.context, train=cfg.train)
            return learner, start.scenario.start()
        learner = build_learner(cfg, start.feature_dim, cls=type(start.learner), data=start.data)
        with plugin_hook(self.name, "prepare()"):
            prepared = learner.prepare(clone_module(start.start_backbone))
        if index > 0:
            with plugin_hook(self.name, "load_state_dict()"):
                learner.load_state_dict(copy.deepcopy(start.learner_state))
        carried = start.scenario.name == "continual" and start.scenario.carried is not None
        return learner, start.scenario.start() if carried else prepared

    def winner_module(self, search: TaskSearch, winner: Trial, task: TaskInfo, data: TaskData, seed: int) -> None:
        """The winner's selected model, for scoring: in memory, or rebuilt from its saved weights
        when its trial finished before a resume (trained again if the saved weights no longer fit)."""
        if winner.module is not None or winner.failure is not None:
            return
        cfg = task_config(trial_config(self.cfg, winner.overrides) if winner.overrides else self.cfg, len(data.train))
        learner, start = self.trial_start(cfg, task.index)
        with plugin_hook(self.name, f"begin_task({task.key})"):
            module = learner.begin_task(task, start)
        weights = search.load_weights(winner.k)
        try:
            with contextlib.nullcontext() if is_builtin(self.name) else counting_outside():  # the restore is counted
                module.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError):
            print_warning(
                self.console,
                f"task {task.key}: the winning trial {winner.k} changed its model's structure; it is trained again to score it",
            )
            tally = self.meter.task
            L.seed_everything(seed, verbose=False)
            rerun = self.train_trial(search, task, winner.k, data, seed, winner.overrides)
            self.meter.start_task()
            self.meter.task = tally
            L.seed_everything(seed, verbose=False)
            winner.learner, winner.module, winner.trainer, winner.loaders = rerun.learner, rerun.module, rerun.trainer, rerun.loaders
            return
        with plugin_hook(self.name, "load_state_dict()"):
            learner.load_state_dict(winner.learner_state)
        winner.learner, winner.module = learner, self.place(module.to(self.device))
        winner.loaders = make_loaders(data, cfg, self.device, seed)
        winner.trainer = make_trainer(
            cfg,
            precision=self.precision,
            device=self.device,
            steps_per_epoch=1,
            budgeted=False,
            callbacks=[],
            root_dir=str(self.store.run_dir),
            logger=False,
        )
