"""The stream runner: feeds a stream's tasks, in order, to a learner. It owns the scenario, the FLOP
meter, the results store and the loggers; a learner only builds the module of each task."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import pickle
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nevisbench.analysis.summary import summarize
from nevisbench.api.learner import Learner, clone_module, detach_derived
from nevisbench.api.types import TaskInfo
from nevisbench.compute.flops import FlopMeter, FlopTally
from nevisbench.config import to_yaml
from nevisbench.errors import ConfigError, DataError, PluginError, RunFailed, RunInterrupted, TaskFailed
from nevisbench.registry import get_learner_class
from nevisbench.run._faults import crash_point
from nevisbench.run.backbones import build_backbone
from nevisbench.run.distributed import RUN_DIR_ENV, is_writer, world_size
from nevisbench.run.callbacks import (
    CheckpointCallback, FiniteLossCallback, FlopMeterCallback, PruneCallback, ScheduleCallback, TaskPlan,
    milestone_fractions,
)
from nevisbench.run.evaluation import evaluate
from nevisbench.run.loggers import make_sink
from nevisbench.run.parallel import die_with_parent, run_trials, search_slots, stopping
from nevisbench.run.plugin import build_learner, plugin_hook
from nevisbench.run.report import print_warning, summary_table, task_table
from nevisbench.run.results import ResultsStore
from nevisbench.run.run_folder import RunFolder, check_prepared
from nevisbench.run.scenario import Scenario
from nevisbench.run.search import TaskSearch, flat_space, merge_tallies, trial_config
from nevisbench.run.selection import BestDevSelection
from nevisbench.run.task_result import TaskResult, peak_memory, throughput
from nevisbench.run.trainer import (
    compile_module, eval_phase, make_loaders, make_trainer, quiet_lightning, resolve_precision, training_device, use_channels_last,
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
    writer = is_writer(cfg.trainer)
    console = console if writer and console is not None else Console(quiet=not writer)
    quiet_lightning()
    stream = get_stream(cfg.stream.name).select(list(cfg.stream.tasks) if cfg.stream.tasks else None)
    stream, skipped = check_prepared(stream, cfg, console)
    check_devices(cfg, get_learner_class(cfg.learner.name))  # a broken plugin fails before anything is created
    L.seed_everything(cfg.seed, verbose=False)
    backbone, feature_dim = build_backbone(cfg.backbone.name, cfg.backbone.weights)  # bad weights: no folder left behind
    if not writer:  # a DDP rank > 0: the folder rank 0 holds, read only; it dies with rank 0
        die_with_parent()
        folder = RunFolder.reopen(Path(os.environ[RUN_DIR_ENV]), [t.key for t in stream.tasks], follower=True)
    elif cfg.resume:
        folder = RunFolder.reopen(Path(cfg.resume), [t.key for t in stream.tasks])
        if folder.done:
            folder.release()
            console.print(f"Run {folder.path} is already finished; nothing to do.")
            return folder.path
        console.print(f"Resuming [cyan]{folder.name}[/]: {len(folder.finished)} of {len(stream.tasks)} tasks finished.")
    else:
        folder = RunFolder.create(cfg, to_yaml(cfg))
    if writer and world_size(cfg.trainer) > 1:
        os.environ[RUN_DIR_ENV] = str(folder.path.resolve())  # the ranks Lightning launches read it
    runner: StreamRunner | None = None
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
        join_ranks(runner.ranks, ok=True)
    except BaseException:
        join_ranks(runner.ranks if runner is not None else [], ok=False)
        raise
    finally:
        folder.release()
    console.print(summary_table(summary))
    console.print(f"Results: {folder.path}")
    return folder.path


def join_ranks(procs: list[Any], *, ok: bool, timeout: float = 300.0) -> None:
    """Rank 0 ends after the ranks it launched: it waits for them when the run finished, and stops
    them when it did not (they would wait for rank 0 in their next collective)."""
    for proc in procs:
        if not ok:
            proc.terminate()
        try:
            proc.wait(timeout=timeout if ok else 10.0)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_devices(cfg: DictConfig, learner_class: type) -> None:
    """Refuse devices this machine does not have (a list names CUDA devices), and DDP for a learner
    that declares it cannot run under it (e.g. one that changes its model's structure mid-training,
    which DDP's gradient buckets cannot follow)."""
    devices, accelerator = OmegaConf.to_container(cfg.trainer, resolve=True)["devices"], cfg.trainer.accelerator
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(devices, list) or (isinstance(devices, int) and devices > 1 and on_gpu):
        if accelerator == "cpu":
            raise ConfigError(f"Invalid value for 'trainer.devices': {devices} names CUDA devices but "
                              "trainer.accelerator=cpu; on CPU give a process count such as trainer.devices=2")
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (max(devices) + 1 if isinstance(devices, list) else devices) > available:
            have = f"this machine has {available} CUDA device(s)" if available else "no CUDA device is available"
            raise ConfigError(f"Invalid value for 'trainer.devices': {devices} with trainer.accelerator={accelerator}, "
                              f"but {have}")
    if world_size(cfg.trainer) > 1 and not getattr(learner_class, "supports_ddp", True):
        raise ConfigError(f"learner '{cfg.learner.name}' cannot train under DDP (trainer.devices="
                          f"{cfg.trainer.devices}): it changes its model's structure during training; use trainer.devices=1")


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
        self.feature_dim = feature_dim
        # a search over learner.* keys prepares each trial's own learner on the run's starting backbone
        self._start_backbone = clone_module(backbone) if _searches_learner(cfg) else None
        with plugin_hook(self.name, "prepare()"):
            prepared = self.learner.prepare(backbone)
        self.scenario = Scenario(cfg.scenario, prepared, learner_name=self.name)
        self.meter = FlopMeter()
        self.precision = resolve_precision(cfg)
        self.device = training_device(cfg)
        self.sink = make_sink(cfg, store.run_dir, store.run_dir.name, console) if store.writer else None
        self.ranks: list[Any] = []  # under DDP, the processes Lightning launched for ranks > 0
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
        """Train and score one task (its search trials, if any; the winner on dev), commit its
        results line, and return it."""
        cfg, task, seed = self.cfg, task_info(spec, index), self.cfg.seed + index
        L.seed_everything(seed, verbose=False)
        data = self._load(spec, seed)
        search = TaskSearch(cfg, index, self.store.state_dir, writer=self.store.writer)
        if search.enabled and cfg.search.parallel > 1:
            trials, winner = self._search_parallel(search, spec, task, index, seed)
        else:
            trials, winner = self._search(search, task, index, data, seed)
        if search.enabled:  # the winner's training is `train`, the others' `search`, every dev score `eval`
            L.seed_everything(seed, verbose=False)
            self.meter.start_task()
            self.meter.task = merge_tallies(winner.tally, [t.tally for t in trials if t is not winner])
            self._winner_module(search, winner, task, index, data, seed)
        module, trainer, loaders, failure = winner.module, winner.trainer, winner.loaders, winner.failure
        start = time.perf_counter()
        scores = {name: self._evaluate(module, task, loaders[name], trainer) if failure is None and name in loaders else None
                  for name in ("dev_test", "test")}
        wall = time.perf_counter() - start + sum(t.seconds for t in trials)
        if failure is None:
            self.learner = winner.learner
        failure = failure or self._end_task(task, module)
        tally = self.meter.end_task()
        steps = winner.steps
        result = TaskResult(
            task=task.key, index=index, domain=task.domain, num_classes=task.num_classes,
            metric="1-mAP" if task.multi_label else "top1_error", test_error=scores["test"],
            dev_test_error=scores["dev_test"], selected=winner.selected, dev_error=winner.dev_error, steps=steps,
            flops=tally.as_dict(), cumulative_flops=self.meter.stream.total, anytime=winner.anytime, wall_seconds=wall,
            throughput=throughput(tally, steps * cfg.data.batch_size, self.device, self.precision, cfg.trainer.peak_flops),
            peak_memory_bytes=peak_memory(self.device), data_on_device=loaders["train"].images.device == self.device,
            num_train=len(data.train), num_test=len(data.test), status="ok" if failure is None else "failed",
            error=failure, budget=winner.budget,
            search=search_record(cfg, trials, winner) if search.enabled else None,
            extra=self._task_report(task) if failure is None else {})
        line = self._commit(index, result)
        search.clear()
        return line

    def _search(self, search: TaskSearch, task: TaskInfo, index: int, data: TaskData, seed: int) -> tuple[list[Trial], Trial]:
        """Run (or, on resume, read back) every trial of the task; return them and the winner (the
        lowest dev error; ties: the earlier trial; no trial finished: the first)."""
        trials: list[Trial] = []
        best: Trial | None = None
        for k in range(search.trials):
            overrides = search.ask()
            trial = Trial.restored(search.load(k), overrides, search, k)
            if trial is None:
                if search.enabled:
                    L.seed_everything(seed, verbose=False)  # every trial starts from the same state
                trial = self._trial(search, task, index, k, data, seed, overrides)
                if search.enabled:
                    search.save(k, trial.record(with_learner=trial.beats(best)), trial.weights() if trial.beats(best) else None)
            # the pruner reads every trial's milestones before the next trial (idempotent: a trial
            # that ran here has reported them; one read back or resumed mid-trial may not have)
            search.report(trial.anytime)
            search.tell(trial.dev_error if trial.failure is None else None, pruned=trial.pruned)
            trials.append(trial)
            if trial.beats(best):
                if best is not None:
                    best.release()
                best = trial
                if search.enabled and not trial.resumed:
                    search.drop_weights(k)  # it just saved its weights (a read-back best keeps the ones it saved)
            elif search.enabled:
                trial.release()  # only the best so far stays in memory
        if search.enabled and best is not None:
            search.drop_weights(best.k)
        resumed = sum(t.resumed for t in trials)
        if resumed:
            self.console.print(f"Search on {task.key}: {resumed} of {len(trials)} trials finished before the resume; "
                               "they are not rerun.")
        return trials, best or trials[0]

    def _search_parallel(self, search: TaskSearch, spec: TaskSpec, task: TaskInfo, index: int,
                         seed: int) -> tuple[list[Trial], Trial]:
        """`search.parallel=N`: the same trials as `_search`, N at once in worker processes
        (nevisbench.run.parallel), each saved as a finished trial; then read back as a resume does.
        The draws are made up front (grid and random samplers draw the same values as in turn)."""
        overrides = [search.ask() for _ in range(search.trials)]
        todo = [(k, overrides[k]) for k in range(search.trials) if search.load(k) is None]
        if todo:
            kit = search.folder / "start.pt"
            self._write_trial_kit(kit, spec, index, seed)
            slots = search_slots(min(int(self.cfg.search.parallel), len(todo)), self.device.type == "cuda")
            run_trials(trial_job, kit, self.store.run_dir, todo, slots, f"task {task.key}")
            kit.unlink(missing_ok=True)
        ran = {k for k, _ in todo}
        trials: list[Trial] = []
        best: Trial | None = None
        for k in range(search.trials):
            trial = Trial.restored(search.load(k), overrides[k], search, k)
            if trial is None:
                raise DataError(f"the search worker of task {task.key} left no record of trial {k}")
            trial.resumed = k not in ran
            search.tell(trial.dev_error if trial.failure is None else None, pruned=trial.pruned)
            trials.append(trial)
            if trial.beats(best):
                best = trial
        search.drop_weights(best.k if best is not None else -1)
        resumed = sum(t.resumed for t in trials)
        if resumed:
            self.console.print(f"Search on {task.key}: {resumed} of {len(trials)} trials finished before the resume; "
                               "they are not rerun.")
        return trials, best or trials[0]

    def _write_trial_kit(self, path: Path, spec: TaskSpec, index: int, seed: int) -> None:
        """What a search worker needs to run a trial exactly as this process would (see `for_trials`)."""
        from nevisbench.run.results import atomic_write_bytes

        for backbone in (self.scenario.initial, self.scenario.carried, self._start_backbone):
            if backbone is not None:
                detach_derived(backbone)
        cfg = self.cfg.copy()
        cfg.trainer.progress_bar = False  # N bars would interleave; a bar changes nothing counted
        cfg.trainer.devices = 1  # a worker sees only its own slot's device (trainer.devices=[3] -> its cuda:0)
        kit = {"cfg": cfg, "learner": self.learner, "scenario": self.scenario, "feature_dim": self.feature_dim,
               "start_backbone": self._start_backbone, "learner_state": self._learner_state,
               "spec": spec, "index": index, "seed": seed}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_bytes(path, lambda handle: torch.save(kit, handle))
        except (TypeError, AttributeError, RuntimeError, pickle.PicklingError) as exc:
            raise PluginError(f"Learner '{self.name}' cannot be sent to a search worker ({str(exc).splitlines()[0]}); "
                              "run with search.parallel=1") from None

    @classmethod
    def for_trials(cls, kit: dict[str, Any], run_dir: Path) -> StreamRunner:
        """A runner in a search worker: the parent's learner, scenario and config, its own FLOP
        meter, no logger; it only runs trials (`_trial`)."""
        self = cls.__new__(cls)
        self.cfg, self.store, self.console = kit["cfg"], ResultsStore(run_dir), Console()
        self.name = self.cfg.learner.name
        self.learner, self.scenario, self.feature_dim = kit["learner"], kit["scenario"], kit["feature_dim"]
        self._start_backbone, self._learner_state = kit["start_backbone"], kit["learner_state"]
        self.meter = FlopMeter()
        self.precision = resolve_precision(self.cfg)
        self.device = training_device(self.cfg)
        self.sink = None
        self.ranks = []
        return self

    def _trial(self, search: TaskSearch, task: TaskInfo, index: int, k: int, data: TaskData, seed: int,
               overrides: dict[str, Any]) -> Trial:
        """One trial: the task's module built from a fresh starting backbone with the trial's config,
        fitted with its own task tally, its selected (best-dev or last) model kept."""
        cfg = trial_config(self.cfg, overrides) if overrides else self.cfg
        learner, start = self._trial_start(cfg, index) if search.enabled else (self.learner, self.scenario.start())
        with plugin_hook(self.name, f"begin_task({task.key})"):
            module = learner.begin_task(task, start)
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

        checkpoint = search.checkpoint(index, k, self.store.task_checkpoint(index))
        callbacks = [
            FlopMeterCallback(self.meter),
            FiniteLossCallback(task.key),
            ScheduleCallback(self.meter, plan, evaluate_dev, steps_per_epoch=len(loaders["train"])),
            CheckpointCallback(checkpoint, cfg.train.checkpoint_every_n_steps, loaders["train"]),
            selection,
        ]
        pruning = PruneCallback(search, plan)
        if search.pruning:
            callbacks.insert(3, pruning)  # after the milestone's evaluation, before the mid-task checkpoint
        trainer = make_trainer(cfg, precision=self.precision, device=self.device, steps_per_epoch=len(loaders["train"]),
                               budgeted=plan.budget is not None, callbacks=callbacks, root_dir=str(self.store.run_dir),
                               logger=self.sink.lightning_logger() if self.sink is not None else False)
        start = time.perf_counter()
        crash_point(f"trial:{index}:{k}")
        failure = self._fit(trainer, module, loaders["train"], task, checkpoint)
        selected = selection.restore(module) if failure is None else {"rule": "none"}
        dev_error = selected.get("dev_error", plan.records[-1]["dev_error"] if plan.records else None)
        if search.enabled and failure is None and dev_error is None:  # no milestone: the trial is scored on dev now
            dev_error = self._evaluate(module, task, loaders["dev"], trainer)
        return Trial(k=k, overrides=overrides, cfg=cfg, learner=learner, module=module, trainer=trainer, loaders=loaders,
                     anytime=plan.records, selected=selected, dev_error=dev_error, failure=failure,
                     tally=self.meter.task.copy(), steps=int(trainer.global_step), pruned=pruning.pruned,
                     budget=_budget_record(plan, self.meter.task), seconds=time.perf_counter() - start)

    def _trial_start(self, cfg: DictConfig, index: int) -> tuple[Learner, torch.nn.Module]:
        """The learner of one trial and the backbone it begins from.

        Without `learner.*` keys in the space: a copy of the run's (prepared) learner reading the
        trial's `train` section, and a copy of the scenario's starting backbone. With them: a fresh
        learner built from the trial's config and prepared on a copy of the run's starting backbone
        (so keys that only `prepare()` reads, e.g. a sparsity, take effect), given the run's learner
        state after the tasks so far; it begins from the backbone its `prepare()` returned, except in
        `continual` after the first task, where every trial begins from the carried backbone."""
        if self._start_backbone is None:
            learner = copy.deepcopy(self.learner)
            learner.context = dataclasses.replace(learner.context, train=cfg.train)
            return learner, self.scenario.start()
        learner = build_learner(cfg, self.feature_dim, cls=type(self.learner))
        with plugin_hook(self.name, "prepare()"):
            prepared = learner.prepare(clone_module(self._start_backbone))
        if index > 0:
            with plugin_hook(self.name, "load_state_dict()"):
                learner.load_state_dict(copy.deepcopy(self._learner_state))
        carried = self.scenario.name == "continual" and self.scenario.carried is not None
        return learner, self.scenario.start() if carried else prepared

    def _winner_module(self, search: TaskSearch, winner: Trial, task: TaskInfo, index: int, data: TaskData, seed: int) -> None:
        """The winner's selected model, for scoring: in memory, or rebuilt from its saved weights
        when its trial finished before a resume (rerun if the saved weights no longer fit)."""
        if winner.module is not None or winner.failure is not None:
            return
        cfg = trial_config(self.cfg, winner.overrides) if winner.overrides else self.cfg
        learner, start = self._trial_start(cfg, index)
        with plugin_hook(self.name, f"begin_task({task.key})"):
            module = learner.begin_task(task, start)
        weights, state = search.load_weights(winner.k), winner.learner_state
        try:
            module.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError):
            print_warning(self.console, f"task {task.key}: the winning trial {winner.k} changed its model's structure; "
                                        "it is trained again to score it")
            tally = self.meter.task
            L.seed_everything(seed, verbose=False)
            rerun = self._trial(search, task, index, winner.k, data, seed, winner.overrides)
            self.meter.start_task()
            self.meter.task = tally
            L.seed_everything(seed, verbose=False)
            winner.learner, winner.module, winner.trainer, winner.loaders = rerun.learner, rerun.module, rerun.trainer, rerun.loaders
            return
        with plugin_hook(self.name, "load_state_dict()"):
            learner.load_state_dict(state)
        winner.learner, winner.module = learner, self._placed(module.to(self.device))
        winner.loaders = make_loaders(data, cfg, self.device, seed)
        winner.trainer = make_trainer(cfg, precision=self.precision, device=self.device, steps_per_epoch=1,
                                      budgeted=False, callbacks=[], root_dir=str(self.store.run_dir), logger=False)

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
            compile_module(module)  # in place: the module keeps its type, names and parameters
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return module

    def _evaluate(self, module: L.LightningModule, task: TaskInfo, loader: BatchLoader, trainer: L.Trainer) -> float:
        try:
            before = (self.meter.task.eval, self.meter.task.executed_eval)
            with plugin_hook(self.name, f"forward() while evaluating {task.key}"):
                error = evaluate(module, eval_phase(trainer, loader), self.meter, num_classes=task.num_classes, multi_label=task.multi_label,
                                 forward_context=trainer.precision_plugin.forward_context)
            if trainer.world_size == 1:
                return error
            # DDP: every rank evaluated its replica; the evaluation is charged once, at the largest
            # count any rank made (a module cannot hide work on the ranks whose meters are not
            # written), and rank 0's score is everyone's, so every decision taken from it (milestone
            # model, search winner) is the same on every rank
            spent = torch.tensor([self.meter.task.eval - before[0], self.meter.task.executed_eval - before[1]],
                                 dtype=torch.float64, device=trainer.strategy.root_device)
            most = trainer.strategy.reduce(spent.clone(), reduce_op="max").tolist()
            self.meter.task.eval += most[0] - float(spent[0])
            self.meter.task.executed_eval += most[1] - float(spent[1])
            return trainer.strategy.broadcast(error, src=0)
        except PluginError as exc:
            if str(exc).startswith("Learner '"):
                raise
            raise PluginError(f"Learner '{self.name}' on task {task.key}: {exc}") from exc

    def _fit(self, trainer: L.Trainer, module: L.LightningModule, loader: BatchLoader, task: TaskInfo,
             checkpoint: Path) -> str | None:
        """Train; return the failure message of a task stopped by a bad loss, None when it finished."""
        if checkpoint.exists():
            self.store.check_checkpoint(checkpoint)
        try:
            with plugin_hook(self.name, f"training on {task.key}"):
                try:
                    trainer.fit(module, train_dataloaders=loader, weights_only=True,
                                ckpt_path=str(checkpoint) if checkpoint.exists() else None)
                finally:
                    self.ranks = self.ranks or list(getattr(trainer.strategy.launcher, "procs", None) or [])
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

    def _task_report(self, task: TaskInfo) -> dict[str, Any]:
        """The learner's own facts about the task, checked to be JSON, as `learner_report`."""
        with plugin_hook(self.name, f"task_report({task.key})"):
            report = self.learner.task_report(task)
            json.dumps(report, allow_nan=False)
        return {"learner_report": report} if report else {}

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


_DATA: dict[tuple[str, int], TaskData] = {}  # a search worker's task data, loaded once per task


def trial_job(job: dict[str, Any]) -> int:
    """A search worker's job (`search.parallel`, see nevisbench.run.parallel): run one trial from
    the task's starting-state file exactly as `_search` would, save it as a finished trial, return
    its number."""
    if stopping():
        raise KeyboardInterrupt  # queued before a Ctrl-C: not started
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    quiet_lightning()
    kit = torch.load(job["kit"], map_location="cpu", weights_only=False)
    runner = StreamRunner.for_trials(kit, Path(job["run_dir"]))
    spec, index, k, seed = kit["spec"], kit["index"], job["k"], kit["seed"]
    if (spec.key, seed) not in _DATA:
        _DATA.clear()
        L.seed_everything(seed, verbose=False)
        _DATA[(spec.key, seed)] = runner._load(spec, seed)
    search = TaskSearch(runner.cfg, index, runner.store.state_dir)
    L.seed_everything(seed, verbose=False)  # every trial starts from the same state, wherever it runs
    trial = runner._trial(search, task_info(spec, index), index, k, _DATA[(spec.key, seed)], seed, job["overrides"])
    search.save(k, trial.record(with_learner=trial.failure is None), trial.weights() if trial.failure is None else None)
    return k


def _searches_learner(cfg: DictConfig) -> bool:
    """Whether the search space names a `learner.*` key."""
    if cfg.get("search") is None or cfg.search.name == "none":
        return False
    return any(key.startswith("learner.") for key in flat_space(OmegaConf.to_container(cfg.search.space, resolve=True)))


def _budget_record(plan: TaskPlan, tally: FlopTally) -> dict[str, Any] | None:
    if plan.budget is None:
        return None
    spent = tally.measure(plan.measure, "train")
    return {"flops_per_task": plan.budget, "measure": plan.measure, "spent": spent, "ratio": spent / plan.budget}


@dataclass
class Trial:
    """One trial of a task: its values, its selected model (None when read back on resume) and its
    compute. With search=none a task has exactly one trial, with no values."""

    k: int
    overrides: dict[str, Any]
    dev_error: float | None
    failure: str | None
    tally: FlopTally
    steps: int
    anytime: list[dict[str, float]]
    selected: dict[str, Any]
    budget: dict[str, Any] | None
    seconds: float
    cfg: Any = None
    learner: Any = None
    module: Any = None
    trainer: Any = None
    loaders: Any = None
    learner_state: Any = field(default=None, repr=False)
    resumed: bool = False  # read back from the run's state, not run in this process
    pruned: bool = False  # stopped at a milestone by the search's pruner: it cannot win

    def beats(self, other: Trial | None) -> bool:
        """A trial that trained without failing, ranked by (pruned, dev error): a pruned trial never
        beats one that finished, and wins only when every other trial was pruned or failed (so a
        pruner cannot fail a task whose trials trained fine). Ties: the earlier trial wins."""
        if self.failure is not None or self.dev_error is None:
            return False
        if other is None or other.failure is not None or other.dev_error is None:
            return True
        return (self.pruned, self.dev_error) < (other.pruned, other.dev_error)

    def release(self) -> None:
        self.module = self.trainer = self.loaders = self.learner = None

    def record(self, *, with_learner: bool) -> dict[str, Any]:
        """What the run's state keeps of a finished trial (the learner's state only for a best so far)."""
        return {"k": self.k, "overrides": dict(self.overrides), "dev_error": self.dev_error, "failure": self.failure,
                "tally": asdict(self.tally), "steps": self.steps, "anytime": self.anytime, "selected": self.selected,
                "budget": self.budget, "seconds": self.seconds, "pruned": self.pruned,
                "learner": self.learner.state_dict() if with_learner else None}

    def weights(self) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    @staticmethod
    def restored(record: dict[str, Any] | None, overrides: dict[str, Any], search: TaskSearch, k: int) -> Trial | None:
        """A trial finished before a resume, from its record; None when it has none."""
        if record is None:
            return None
        if record["overrides"] != overrides:
            raise DataError(f"Cannot resume: the search record {search.record_path(k)} holds other values "
                            f"({record['overrides']}) than the sampler draws now ({overrides})")
        return Trial(k=k, overrides=overrides, dev_error=record["dev_error"], failure=record["failure"],
                     tally=FlopTally(**record["tally"]), steps=record["steps"], anytime=record["anytime"],
                     selected=record["selected"], budget=record["budget"], seconds=record["seconds"],
                     learner_state=record["learner"], pruned=record.get("pruned", False), resumed=True)


def search_record(cfg: DictConfig, trials: list[Trial], winner: Trial) -> dict[str, Any]:
    """The `search` object of a task's results line: every trial and the winner."""
    measure = cfg.budget.measure
    return {
        "name": cfg.search.name, "sampler": cfg.search.sampler,
        "trials": [{"trial": t.k, "overrides": t.overrides, "dev_error": t.dev_error,
                    "status": "failed" if t.failure is not None else "pruned" if t.pruned else "ok", "error": t.failure, "steps": t.steps,
                    "train_flops": t.tally.measure(measure, "train"), "eval_flops": t.tally.measure(measure, "eval"),
                    "flops": {"train": t.tally.train, "eval": t.tally.eval,
                              "executed_train": t.tally.executed_train, "executed_eval": t.tally.executed_eval},
                    "seconds": t.tally.seconds_train + t.tally.seconds_eval} for t in trials],
        "winner": winner.k,
        "winner_overrides": winner.overrides,
    }
