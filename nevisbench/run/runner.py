"""The stream runner: feeds a stream's tasks, in order, to a learner. It owns the scenario, the FLOP
meter, the results store and the loggers; a learner only builds the module of each task. One
task's training (its trials, their winner) is `nevisbench.run.task.train` and
`nevisbench.run.search.execute`; this module is the stream loop: restore, run a task, end it, commit."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nevisbench.api.learner import Learner, clone_module
from nevisbench.api.types import TaskInfo, task_seed
from nevisbench.compute import guard
from nevisbench.compute.flops import FlopMeter, FlopTally, meter_engine, take_pending
from nevisbench.config import to_yaml
from nevisbench.config.search_space import searches_learner
from nevisbench.errors import ConfigError, DataError, PluginError, RunFailed, RunInterrupted, TaskFailed
from nevisbench.registry import get_learner_class
from nevisbench.run.learner.backbone import describe_backbone, start_backbone
from nevisbench.run.learner.data import StreamData
from nevisbench.run.learner.plugin import build_learner, collect_garbage, plugin_hook
from nevisbench.run.learner.scenario import Scenario
from nevisbench.run.revisit import Revisits
from nevisbench.run.search.execute import train_trials, train_trials_in_parallel
from nevisbench.run.search.parallel import die_with_parent
from nevisbench.run.search.study import TaskSearch, merge_tallies
from nevisbench.run.store._faults import crash_point
from nevisbench.run.store.loggers import make_sink
from nevisbench.run.store.metric import StreamMetric, TaskProbe, score_lines, task_metric
from nevisbench.run.store.metrics import METRICS
from nevisbench.run.store.report import print_warning, summary_table, task_table
from nevisbench.run.store.results import ResultsStore
from nevisbench.run.store.run_folder import RunFolder, check_prepared
from nevisbench.run.store.summary import stream_tally, summarize
from nevisbench.run.store.task_result import TaskResult, peak_memory, throughput
from nevisbench.run.task.audit import TaskAuditor, audit_record, audit_skipped, reference_backbone, refusal
from nevisbench.run.task.distributed import RUN_DIR_ENV, is_writer, lost_rank, rank_lost_error, watch_ranks, world_size
from nevisbench.run.task.lightning import make_loaders, quiet_lightning, resolve_precision, training_device
from nevisbench.run.task.plan import optimization_record
from nevisbench.run.task.train import TaskStart, TaskTrainer, task_config, task_info
from nevisbench.run.task.trial import Trial, search_record
from nevisbench.tasks import get_stream
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import BatchLoader

__all__ = ["run", "StreamRunner", "resolve_precision", "summarize"]


def run(cfg: DictConfig, console: Console | None = None, metrics: Sequence[StreamMetric] = METRICS) -> Path:
    """Run the configured learner over the configured stream, scored with `metrics` (their summary
    sections after the stream scores; see `nevisbench.run.store.metric`); return the run folder.

    With `cfg.resume` set, continue that run: finished tasks are kept as they are, the learner's
    state, the carried backbone and the stream's FLOP counts are restored from the state saved after
    the last finished task, and an interrupted task restarts from its last mid-task checkpoint. A
    run with every task committed but its summary.json missing or unreadable gets its summary
    rebuilt from the committed lines (a finished run keeps no state).
    """
    writer = is_writer(cfg.trainer)
    console = console if writer and console is not None else Console(quiet=not writer)
    quiet_lightning()
    stream = get_stream(cfg.stream.name).select(list(cfg.stream.tasks) if cfg.stream.tasks else None)
    stream, skipped = check_prepared(stream, cfg, console)
    check_devices(cfg, get_learner_class(cfg.learner.name))  # a broken plugin fails before anything is created
    L.seed_everything(cfg.seed, verbose=False)
    backbone, feature_dim = start_backbone(cfg)  # bad weights, a backbone the learner refuses: no folder left behind
    folder = _open_folder(cfg, [t.key for t in stream.tasks], console, writer=writer)
    if folder.done:
        folder.release()
        console.print(f"Run {folder.path} is already finished; nothing to do.")
        return folder.path
    runner: StreamRunner | None = None
    try:
        runner = StreamRunner(cfg, backbone=backbone, feature_dim=feature_dim, store=folder.store, console=console,
                              tasks=stream.tasks, metrics=metrics)
        runner.announce(stream)
        _pick_up(runner, folder, console)
        results = list(folder.finished)
        try:
            for index, spec in enumerate(stream.tasks[len(results):], start=len(results)):
                results.append(runner.run_task(spec, index))
                _report_task(cfg, console, results[-1], len(stream.tasks), folder.path)
        except KeyboardInterrupt:
            raise RunInterrupted(folder.path, sum(r["status"] == "ok" for r in results)) from None
        summary = summarize(cfg, folder.name, results, runner.meter.stream.as_dict(), skipped=skipped, backbone=runner.backbone_info,
                            meter_engine=runner.meter_engine)
        summary.sections.update(score_lines(metrics, results))
        folder.store.write_summary(summary.to_dict())
        folder.store.clear_state()  # a finished run needs no resume state
        if runner.sink is not None:
            runner.sink.finish(summary, metrics)
        join_ranks(runner.ranks, ok=True)
    except KeyboardInterrupt:  # before the first task (the learner's prepare, a resume's restore): the folder is kept
        _stop_ranks(runner.ranks if runner is not None else [], folder.path, RunInterrupted(folder.path, 0))
        raise RunInterrupted(folder.path, sum(r.get("status") == "ok" for r in folder.finished)) from None
    except BaseException as exc:
        _stop_ranks(runner.ranks if runner is not None else [], folder.path, exc)
        raise
    finally:
        folder.release()
    console.print(summary_table(summary))
    console.print(f"Results: {folder.path}")
    return folder.path


def _release(trials: list[Trial]) -> None:
    """Drop the harness's references to the trials' modules and trainers (their finalisers may run)."""
    for trial in trials:
        trial.module = trial.trainer = None


def _pick_up(runner: StreamRunner, folder: RunFolder, console: Console) -> None:
    """Pick up after the committed tasks: from the state saved after the last one; a finished run
    whose summary was lost keeps no state and needs none: its stream FLOP tally is rebuilt from the
    committed lines (see `stream_tally`)."""
    if folder.summary_lost is None:
        runner.restore(folder.finished)
        return
    runner.meter.stream = stream_tally(folder.finished, folder.store.results_path)
    console.print(f"Every task of {folder.name} is committed in results.jsonl, but summary.json is "
                  f"{folder.summary_lost}: it is rebuilt from the committed lines.")


def _stop_ranks(ranks: list[Any], run_dir: Path, exc: BaseException) -> None:
    """The run stopped with `exc`: stop the ranks rank 0 launched. When one of them had died (a
    collective then failed here), the error names that rank and the resume command, not the symptom
    (a Ctrl-C stops every rank, and stays a Ctrl-C)."""
    interrupted = not isinstance(exc, Exception) or isinstance(exc, RunInterrupted)
    lost = lost_rank(ranks) if ranks and not interrupted else None
    join_ranks(ranks, ok=False)
    if lost is not None:
        raise RunFailed(rank_lost_error(lost, run_dir, str(exc))) from None


def _open_folder(cfg: DictConfig, planned: list[str], console: Console, *, writer: bool) -> RunFolder:
    """The run's folder: a new one, the one to resume, or (a DDP rank > 0) the one rank 0 holds, read
    only (that rank then dies with rank 0)."""
    if not writer:
        die_with_parent()
        return RunFolder.reopen(Path(os.environ[RUN_DIR_ENV]), planned, follower=True)
    if cfg.resume:
        folder = RunFolder.reopen(Path(cfg.resume), planned)
        if folder.unverified:
            print_warning(console, f"{folder.name} has no digest of its config.yaml (started before nevisbench wrote one): "
                                   "the file is taken as it is, unchecked")
        if not folder.done:
            console.print(f"Resuming [cyan]{folder.name}[/]: {len(folder.finished)} of {len(planned)} tasks finished.")
    else:
        folder = RunFolder.create(cfg, to_yaml(cfg))
    if world_size(cfg.trainer) > 1:
        os.environ[RUN_DIR_ENV] = str(folder.path.resolve())  # the ranks Lightning launches read it
        watch_ranks(folder.path)  # a rank that dies is named, with the resume command
    return folder


def _report_task(cfg: DictConfig, console: Console, result: dict[str, Any], tasks: int, run_dir: Path) -> None:
    """Print a committed task's line; a failed task warns, and stops the stream under on_failure=stop."""
    console.print(task_table(result, tasks))
    if result["status"] == "failed":
        print_warning(console, result["error"])
        if cfg.on_failure == "stop":
            raise RunFailed(f"{result['error']}. The stream stopped (on_failure=stop); finished "
                            f"results are in {run_dir}. Fix the cause and resume with: "
                            f"nevisbench run resume={run_dir}, or run with on_failure=skip")


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
    devices, accelerator = cast(dict, OmegaConf.to_container(cfg.trainer, resolve=True))["devices"], cfg.trainer.accelerator
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


class StreamRunner:
    """The state of one run across its tasks: the learner, the scenario, the meter, the store."""

    def __init__(self, cfg: DictConfig, *, backbone: torch.nn.Module | None, feature_dim: int | None, store: ResultsStore,
                 console: Console, tasks: Sequence[TaskSpec] = (), learner: Learner | None = None,
                 metrics: Sequence[StreamMetric] = METRICS) -> None:
        self.cfg, self.store, self.console, self.name = cfg, store, console, cfg.learner.name
        # what counts ops: chosen before the learner's own code runs (its constructor and prepare() are counted)
        self.meter_engine, audit_every = meter_engine(cfg.get("meter"), type(learner) if learner is not None
                                                       else get_learner_class(self.name))
        self.metrics = [metric for metric in metrics if metric.enabled(cfg)]  # those that measure each task
        self.data = StreamData(cfg, tasks)  # what the learner may draw: train splits of the tasks so far
        if learner is not None:  # a learner built by the caller (benchmarks) draws from this run's data too
            learner.context = dataclasses.replace(learner.context, data=self.data.for_learner())
        self.learner = learner or build_learner(cfg, feature_dim, data=self.data)
        self.revisits = Revisits(cfg, self.name)  # eval.revisit: earlier tasks scored again after each task
        self.feature_dim = feature_dim
        # a search over learner.* keys prepares each trial's own learner on the run's starting backbone
        self._start_backbone = clone_module(backbone) if backbone is not None and searches_learner(cfg) else None
        # the time audit's reference: the harness's backbone before the learner's prepare() touches it
        self._reference = reference_backbone(backbone, cfg, self.name)
        before = set(threading.enumerate())
        with plugin_hook(self.name, "prepare()"):
            prepared = self.learner.prepare(cast(torch.nn.Module, backbone))  # None: the learner brings_backbone
        self._prepare_threads = [t for t in threading.enumerate() if t not in before]  # its work is prepare's too
        self.backbone_info = describe_backbone(self.learner, backbone, prepared)  # the architecture that runs
        self.scenario = Scenario(cfg.scenario, prepared, learner_name=self.name)
        self.meter = FlopMeter(audit_every=audit_every).watch()
        self.precision = resolve_precision(cfg)
        self.device = training_device(cfg)
        self.sink = make_sink(cfg, store.run_dir, store.run_dir.name, console) if store.writer else None
        self.ranks: list[Any] = []  # under DDP, the processes Lightning launched for ranks > 0
        self._learner_state: dict[str, Any] = self._saveable_learner_state()

    def announce(self, stream: Any) -> None:
        cfg = self.cfg
        self.console.print(f"[bold]nevisbench[/] run [cyan]{self.store.run_dir.name}[/]: learner={cfg.choices.learner} "
                           f"stream={stream.name} ({len(stream.tasks)} tasks) scenario={cfg.scenario} "
                           f"backbone={self.backbone_info['name']} precision={self.precision} -> {self.store.run_dir}")
        if cfg.backbone.weights == "none" and self.backbone_info["source"] == "config":  # only what ran was built from it
            print_warning(self.console, f"backbone.weights=none: {cfg.backbone.name} starts from RANDOM initialisation, "
                                        "not pretrained weights (fine for the demo, not the paper's protocol).")
        if self.backbone_info["source"] == "learner" and not getattr(type(self.learner), "brings_backbone", False):
            self.console.print(f"[dim]Note: learner '{self.name}' replaced the run's {cfg.backbone.name} in prepare() "
                               f"(its {self.backbone_info['name']} runs): set `brings_backbone = True` on the learner "
                               "class and the harness will not build one for nothing (docs/writing-a-learner.md)[/]")

    def restore(self, finished: list[dict[str, Any]]) -> None:
        """Pick up after the last committed task of `finished` (none: nothing to do): learner state,
        carried backbone, stream FLOPs."""
        if not finished:
            return
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
        try:
            self.revisits.load_state_dict(state.get("revisit_heads") or {})
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError, IndexError) as exc:
            raise DataError(f"Cannot resume: the revisit heads in the state file {path} are damaged ({exc!r})") from None
        self._forget_resume_work()

    def _forget_resume_work(self, wait: float = 5.0) -> None:
        """A resumed run repeats the learner's prepare() (and the threads it started there) and loads its
        state; the uninterrupted run charged prepare to its first task, which the restored stream
        tally holds. That work is counted, then forgotten, so a resume gives the uninterrupted counts.
        Threads prepare() started are given `wait` seconds in all to finish their work first."""
        deadline = time.monotonic() + wait
        for thread in self._prepare_threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        take_pending()

    def task_trainer(self) -> TaskTrainer:
        """The trainer of the next task, starting from the run's state after the tasks so far."""
        start = TaskStart(cfg=self.cfg, learner=self.learner, scenario=self.scenario, feature_dim=self.feature_dim,
                          start_backbone=self._start_backbone, learner_state=self._learner_state, data=self.data)
        return TaskTrainer(start, store=self.store, console=self.console, meter=self.meter, sink=self.sink,
                           ranks=self.ranks)

    def run_task(self, spec: TaskSpec, index: int) -> dict[str, Any]:
        """Train and score one task (its trials: one with search=none; the winner on dev), end it,
        commit its results line, and return it."""
        cfg, task, seed = self.cfg, task_info(spec, index), task_seed(self.cfg.seed, index)
        L.seed_everything(seed, verbose=False)
        trainer = self.task_trainer()
        data = trainer.load(spec, seed)
        self.data.enter(index, data)
        guard.take_violations(), guard.take_flags()  # what an earlier task did is that task's
        auditor = self._auditor()
        if auditor is not None:
            auditor.begin(make_loaders(data, task_config(cfg, len(data.train)), self.device, seed)["train"])
        search = TaskSearch(cfg, index, self.store.state_dir, writer=self.store.writer)
        if search.enabled and cfg.search.parallel > 1:
            trials, winner = train_trials_in_parallel(trainer, search, spec, task, seed)
        else:
            trials, winner = train_trials(trainer, search, task, data, seed)
        if search.enabled:  # the winner's training is `train`, the others' `search`, every dev score `eval`
            L.seed_everything(seed, verbose=False)
            self.meter.start_task()
            self.meter.task = merge_tallies(winner.tally, [t.tally for t in trials if t is not winner])
            trainer.winner_module(search, winner, task, data, seed)
        start = time.perf_counter()
        scores, unscored = trainer.test_scores(winner, task)
        wall = time.perf_counter() - start + sum(t.seconds for t in trials)
        if winner.failure is None:
            self.learner = winner.learner
        measured, unmeasured = self._measure(trainer, winner, task, data) if winner.failure is None else ({}, None)
        failure = winner.failure or unscored or self._end_task(task, winner.module) or unmeasured
        revisit = None
        if failure is None and self.revisits.enabled:
            revisit, failure = self._revisit(trainer, winner, task)
        # the task's modules and trainers are let go and the collector runs, counted (charged to this task):
        # a finaliser (`__del__`) of the module or of a cycle the task left runs here, not uncounted later
        collect_garbage(self.name, release=lambda: _release(trials))
        tally = self.meter.end_task()
        audit = audit_record(auditor, audit_skipped(cfg, self.device, self.name), tally, sum(t.steps for t in trials))
        if audit.get("flagged"):
            print_warning(self.console, f"learner '{self.name}' on {task.key}: {audit['reason']}. The task's point is "
                                        "marked on the curve (docs/flop-meter.md, the time audit).")
        failure = failure or refusal(self.name, task.key, self.meter)
        task_cfg = task_config(cfg, len(data.train))  # the task's batch size (protocol.batch_size)
        result = TaskResult(
            task=task.key, index=index, domain=task.domain, num_classes=task.num_classes, metric=task_metric(task.multi_label),
            test_error=scores["test"], dev_test_error=scores["dev_test"], selected=winner.selected, dev_error=winner.dev_error,
            steps=winner.steps, flops=tally.as_dict(), cumulative_flops=self.meter.stream.total, anytime=winner.anytime,
            wall_seconds=wall, peak_memory_bytes=peak_memory(self.device),
            throughput=throughput(tally, winner.steps * task_cfg.data.batch_size, self.device, self.precision, cfg.trainer.peak_flops),
            data_on_device=bool(winner.loaders) and winner.loaders["train"].images.device == self.device,
            num_train=len(data.train), num_test=len(data.test), status="ok" if failure is None else "failed",
            error=failure, budget=winner.budget, search=search_record(cfg, trials, winner) if search.enabled else None,
            extra={"optimization": optimization_record(task_cfg, len(data.train), winner.steps),
                   **(self._task_report(task) if failure is None else {}), **({"revisit": revisit} if revisit else {}),
                   "audit": audit, **measured})
        line = self._commit(index, result)
        search.clear()
        return line

    def _auditor(self) -> TaskAuditor | None:
        """The run's time auditor (one for every task: a task starts from the rates the last one ended with)."""
        if audit_skipped(self.cfg, self.device, self.name) is not None:
            return None
        if getattr(self, "_audits", None) is None:
            self._audits = TaskAuditor(cfg=self.cfg, meter=self.meter, reference=self._reference, precision=self.precision,
                                       device=self.device, root_dir=str(self.store.run_dir))
        return self._audits

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

    def _measure(self, trainer: TaskTrainer, winner: Trial, task: TaskInfo, data: Any) -> tuple[dict[str, Any], str | None]:
        """The metrics' own measures of the task (`StreamMetric.measure`), before its end_task: the
        scenario still holds the backbone the task started from. Charged to the task as evaluation; a
        model failing there is recorded on the task's line, as in end_task."""
        if not self.metrics:
            return {}, None
        scenario = self.scenario
        start = scenario.carried if scenario.name == "continual" and scenario.carried is not None else scenario.initial

        def evaluate(model: torch.nn.Module, split: str) -> float:
            loader = BatchLoader(getattr(data, split), batch_size=int(self.cfg.data.eval_batch_size),
                                 image_size=int(self.cfg.data.image_size), train=False, device=trainer.device, resident=False)
            return trainer.evaluate(model, task, loader, winner.trainer, split)

        probe = TaskProbe(cfg=self.cfg, task=task, data=data, start=start, initial=scenario.initial, device=trainer.device,
                          evaluate=evaluate)
        measured: dict[str, Any] = {}
        for metric in self.metrics:
            before = self.meter.task.eval
            try:
                value = metric.measure(probe)
            except TaskFailed as exc:  # outputs that are not finite: no score, and the task stands
                value = {"skipped": str(exc)}
            except PluginError as exc:
                return measured, str(exc)
            if isinstance(value, dict):  # what measuring cost, as a revisit records it
                value = {**value, "flops": self.meter.task.eval - before}
            if value is not None:
                measured[metric.name] = value
        return measured, None

    def _revisit(self, trainer: TaskTrainer, winner: Trial, task: TaskInfo) -> tuple[dict[str, Any] | None, str | None]:
        """Score every earlier task with the model as it now is (eval.revisit), charged as evaluation;
        a learner failing there is recorded on the task's line, as in end_task."""
        before = self.meter.task.eval
        try:
            self.revisits.keep_head(task.index, winner.module)
            failed = {int(line["index"]): str(line.get("error")) for line in self.store.read_results() if line["status"] != "ok"}
            scores = self.revisits.score(task.index, winner.module, self.learner, self.data,
                                         lambda model, earlier, loader, split: trainer.evaluate(model, earlier, loader,
                                                                                                winner.trainer, split),
                                         trainer.device, failed)
        except PluginError as exc:
            return None, str(exc)
        return (None if scores is None else {**scores, "flops": self.meter.task.eval - before}), None

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
                                           "meter": asdict(self.meter.stream), "revisit_heads": self.revisits.state_dict()})
        self.store.append(line)
        crash_point(f"after_task:{index}")
        self.store.prune_state(index)
        if self.sink is not None:
            self.sink.log_task(line)
        return line
