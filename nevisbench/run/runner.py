"""The stream runner: feeds a stream's tasks, in order, to a learner; owns the FLOP meter, the
results store and the loggers."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import warnings
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nevisbench.run._faults import crash_point
from nevisbench.run.backbones import build_backbone
from nevisbench.run.callbacks import (
    CheckpointCallback, FiniteLossCallback, FlopMeterCallback, ScheduleCallback, TaskPlan, milestone_fractions,
)
from nevisbench.config import to_yaml
from nevisbench.tasks.loader import BatchLoader, TaskData
from nevisbench.errors import ConfigError, DataError, PluginError, RunFailed, RunInterrupted, TaskFailed
from nevisbench.run.evaluation import evaluate
from nevisbench.compute.flops import FlopMeter, FlopTally
from nevisbench.compute.hardware import fits_on_device, peak_flops
from nevisbench.api.learner import Learner, LearnerContext, TaskInfo
from nevisbench.run.loggers import make_sink
from nevisbench.registry import get_learner_class
from nevisbench.run.report import print_warning, summary_table, task_table
from nevisbench.run.results import ResultsStore
from nevisbench.analysis.scores import stream_scores
from nevisbench.tasks import get_stream

__all__ = ["run", "resolve_precision", "summarize"]


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*module.s. in eval mode at the start of training.*")  # frozen parts


def resolve_precision(cfg: DictConfig) -> str:
    """`trainer.precision=null` means bf16-mixed on CUDA (fp16-mixed without bf16), fp32 on CPU."""
    if cfg.trainer.precision:
        return str(cfg.trainer.precision)
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _device(cfg: DictConfig) -> torch.device:
    """The device this process trains on (batches are built there directly)."""
    accelerator = cfg.trainer.accelerator
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is available; use cpu or auto")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


def _run_dir(cfg: DictConfig) -> tuple[Path, str]:
    out_dir = Path(os.path.expanduser(cfg.out_dir))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create out_dir '{cfg.out_dir}': {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"out_dir '{cfg.out_dir}' is not writable")
    base = cfg.run_name or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.choices.learner}"
    name, suffix = base, 1
    while (out_dir / name).exists():
        suffix += 1
        name = f"{base}-{suffix}"
    (out_dir / name).mkdir()
    return out_dir / name, name


def _task_info(spec: Any, index: int) -> TaskInfo:
    return TaskInfo(key=spec.key, name=spec.name, index=index, domain=spec.domain,
                    num_classes=spec.num_classes, multi_label=spec.multi_label)


def _channels_last(cfg: DictConfig, device: torch.device) -> bool:
    return cfg.trainer.channels_last if cfg.trainer.channels_last is not None else device.type == "cuda"


def _loaders(data: TaskData, cfg: DictConfig, device: torch.device, seed: int) -> tuple[BatchLoader, BatchLoader, BatchLoader]:
    nbytes = sum(s.images.numel() + s.labels.numel() * 8 for s in (data.train, data.dev, data.test))
    common = dict(image_size=cfg.data.image_size, device=device, hflip=data.hflip, seed=seed,
                  resident=fits_on_device(nbytes, device, cfg.data.device_share),
                  channels_last=_channels_last(cfg, device))
    train = BatchLoader(data.train, batch_size=cfg.data.batch_size, train=True, augment=cfg.data.augment,
                        min_crop_scale=cfg.data.min_crop_scale, **common)
    dev = BatchLoader(data.dev, batch_size=cfg.data.eval_batch_size, train=False, **common)
    test = BatchLoader(data.test, batch_size=cfg.data.eval_batch_size, train=False, **common)
    return train, dev, test


def summarize(cfg: DictConfig, run_name: str, all_results: list[dict[str, Any]], meter_total: dict[str, Any],
              skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:
    results = [r for r in all_results if r["status"] == "ok"]
    errors = [r["test_error"] for r in results]
    scores = stream_scores(results, auc_min_flops=cfg.budget.auc_min_flops, auc_max_flops=cfg.budget.auc_max_flops)
    by_domain: dict[str, list[float]] = {}
    for r in results:
        by_domain.setdefault(r["domain"], []).append(r["test_error"])
    return {
        "run_name": run_name,
        "learner": cfg.choices.learner,
        "learner_config": OmegaConf.to_container(cfg.learner, resolve=True),
        "stream": cfg.stream.name,
        "scenario": cfg.scenario,
        "seed": cfg.seed,
        "backbone": cfg.backbone.name,
        "num_tasks": len(results),
        "mean_test_error": sum(errors) / len(errors) if errors else None,
        "mean_test_error_by_domain": {d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
        "total_flops": meter_total["total"],
        "flops": meter_total,
        "wall_seconds": sum(r["wall_seconds"] for r in results),
        "budget": OmegaConf.to_container(cfg.budget, resolve=True),
        **scores,
        "failed_tasks": [r["task"] for r in all_results if r["status"] != "ok"],
        "skipped_tasks": list(skipped or []),  # not prepared under data.root (stream.allow_missing=true)
        "tasks": all_results,
    }


def _available(stream: Any, cfg: DictConfig, console: Console) -> tuple[Any, list[dict[str, str]]]:
    """Refuse a stream whose prepared data is missing or corrupt (before any training), unless
    `stream.allow_missing`: then drop those tasks, warn loudly, and return them to be recorded."""
    from nevisbench.tasks.cache import STATUS_READY, task_status
    from nevisbench.tasks.catalog import Stream

    root = Path(os.path.expanduser(cfg.data.root))
    bad: dict[str, str] = {}
    for spec in stream.tasks:
        if spec.requires_data and spec.key not in bad:
            status = task_status(root, spec.key, verify=False)
            if status["status"] != STATUS_READY:
                bad[spec.key] = f"{status['status']}: {status['reason']}"
    if not bad:
        return stream, []
    keys = list(bad)
    command = f"nevisbench data prepare {' '.join(keys)} --root {cfg.data.root} --source-dir DIR (or --download)"
    listing = "; ".join(f"{k} ({v})" for k, v in bad.items())
    if not cfg.stream.allow_missing:
        raise DataError(f"{len(keys)} task(s) of stream '{stream.name}' are not prepared in {root}: {listing}. "
                        f"Prepare them with: {command} -- or run the others with stream.allow_missing=true")
    kept = tuple(t for t in stream.tasks if t.key not in bad)
    if not kept:
        raise DataError(f"no task of stream '{stream.name}' is prepared in {root}; prepare them with: {command}")
    print_warning(console, f"stream.allow_missing=true: SKIPPING {len(keys)} unprepared task(s): {listing}. "
                           f"This run covers {len(kept)} of {len(stream.tasks)} tasks; summary.json lists the skipped ones. "
                           f"To add them: {command}")
    return Stream(stream.name, stream.description, kept), [{"task": k, "reason": v} for k, v in bad.items()]


def _make_learner(cfg: DictConfig, feature_dim: int) -> Learner:
    cls = get_learner_class(cfg.learner.name)
    context = LearnerContext(scenario=cfg.scenario, seed=cfg.seed, image_size=cfg.data.image_size,
                             train=cfg.train, feature_dim=feature_dim)
    try:
        return cls(OmegaConf.to_object(cfg.learner), context)
    except Exception as exc:
        raise PluginError(f"Learner '{cfg.learner.name}' failed to initialise: {exc!r}") from exc


def run(cfg: DictConfig, console: Console | None = None) -> Path:
    """Run the configured learner over the configured stream; return the run folder.

    With `cfg.resume` set, continue that run: finished tasks are kept as they are, the learner's
    state and the stream's FLOP counts are restored from the state saved after the last finished
    task, and an interrupted task restarts from its last mid-task checkpoint (or its start).
    """
    console = console or Console()
    _quiet_lightning()
    stream = get_stream(cfg.stream.name).select(list(cfg.stream.tasks) if cfg.stream.tasks else None)
    stream, skipped = _available(stream, cfg, console)
    get_learner_class(cfg.learner.name)  # fail on a broken plugin before creating anything
    if cfg.resume:
        run_dir, run_name = Path(cfg.resume), Path(cfg.resume).name
        store = ResultsStore(run_dir)
        if (run_dir / ResultsStore.SUMMARY).exists():
            console.print(f"Run {run_dir} is already finished; nothing to do.")
            return run_dir
        finished = store.read_results()
        planned = [t.key for t in stream.tasks]
        if [r["task"] for r in finished] != planned[: len(finished)]:
            raise ConfigError(f"the tasks finished in {run_dir} ({', '.join(r['task'] for r in finished)}) are not the "
                              f"first tasks of the stream as it stands now ({', '.join(planned)}); did the prepared data change?")
        console.print(f"Resuming [cyan]{run_name}[/]: {len(finished)} of {len(stream.tasks)} tasks finished.")
    else:
        run_dir, run_name = _run_dir(cfg)
        store = ResultsStore(run_dir)
        store.write_config(to_yaml(cfg))
        finished = []
    precision = resolve_precision(cfg)
    console.print(f"[bold]nevisbench[/] run [cyan]{run_name}[/]: learner={cfg.choices.learner} "
                  f"stream={stream.name} ({len(stream.tasks)} tasks) scenario={cfg.scenario} "
                  f"backbone={cfg.backbone.name} precision={precision} -> {run_dir}")
    if cfg.backbone.weights == "none":
        print_warning(console, f"backbone.weights=none: {cfg.backbone.name} starts from RANDOM initialisation, "
                               "not pretrained weights (fine for the demo, not the paper's protocol).")

    L.seed_everything(cfg.seed, verbose=False)
    backbone, feature_dim = build_backbone(cfg.backbone.name, cfg.backbone.weights)
    learner = _make_learner(cfg, feature_dim)
    try:
        learner.setup(backbone)
    except Exception as exc:
        raise PluginError(f"Learner '{cfg.learner.name}' failed in prepare(): {exc!r}") from exc

    meter = FlopMeter()
    if finished:
        state = store.load_task_state(len(finished) - 1)
        learner.load_state_dict(state["learner"])
        meter.stream = FlopTally(**state["meter"])
    sink = make_sink(cfg, run_dir, run_name, console)
    results: list[dict[str, Any]] = list(finished)
    try:
        for index, spec in enumerate(stream.tasks):
            if index < len(finished):
                continue
            result = _run_task(cfg, spec, index, learner, meter, store, sink, precision, run_dir)
            results.append(result)
            console.print(task_table(result, len(stream.tasks)))
            if result["status"] == "failed":
                print_warning(console, result["error"])
                if cfg.on_failure == "stop":
                    raise RunFailed(f"{result['error']}. The stream stopped (on_failure=stop); finished "
                                    f"results are in {run_dir}. Fix the cause and resume with: "
                                    f"nevisbench run resume={run_dir}, or run with on_failure=skip")
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir, sum(r["status"] == "ok" for r in results)) from None

    summary = summarize(cfg, run_name, results, meter.stream.as_dict(), skipped=skipped)
    store.write_summary(summary)
    store.clear_state()  # a finished run needs no resume state
    if sink is not None:
        sink.finish(summary)
    console.print(summary_table(summary))
    console.print(f"Results: {run_dir}")
    return run_dir


def _progress_bar() -> L.Callback:
    """Lightning's default rich bar redraws from a background thread 100 times a second, which on a
    2-core machine takes measurable time from the training threads; 4 redraws a second is plenty."""
    from lightning.pytorch.callbacks import RichProgressBar

    return RichProgressBar(refresh_rate=4)


def _throughput(tally: Any, images: int, device: torch.device, precision: str, configured_peak: float | None) -> dict[str, Any]:
    seconds = tally.seconds_train
    achieved = tally.executed_train / seconds if seconds > 0 else None
    peak = peak_flops(device, precision, configured_peak)
    return {
        "train_images_per_second": images / seconds if seconds > 0 else None,
        "train_flops_per_second": achieved,  # executed FLOPs: what the hardware really ran
        "peak_flops": peak,
        "mfu": achieved / peak if (achieved and peak) else None,
    }


def _peak_memory(device: torch.device) -> int:
    """Peak device memory of the task on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _run_task(cfg: DictConfig, spec: Any, index: int, learner: Learner, meter: FlopMeter,
              store: ResultsStore, sink: Any, precision: str, run_dir: Path) -> dict[str, Any]:
    task = _task_info(spec, index)
    seed = cfg.seed + index
    L.seed_everything(seed, verbose=False)
    data = spec.load(root=os.path.expanduser(cfg.data.root), image_size=cfg.data.image_size, seed=seed)
    data.validate()
    stored = int(data.train.images.shape[-1])
    if spec.requires_data and stored < cfg.data.image_size:
        print_warning(Console(), f"task '{spec.key}' was prepared at {stored} px but data.image_size={cfg.data.image_size}: "
                                 f"images are upsampled. Prepare it with --size {cfg.data.image_size} --force for full detail.")

    try:
        module = learner.begin_task(task)
    except Exception as exc:
        raise PluginError(f"Learner '{cfg.learner.name}' failed in begin_task({task.key}): {exc!r}") from exc
    if not isinstance(module, L.LightningModule):
        raise PluginError(f"Learner '{cfg.learner.name}'.begin_task must return a LightningModule, "
                          f"got {type(module).__name__}")

    meter.start_task()
    device = _device(cfg)
    train_loader, dev_loader, test_loader = _loaders(data, cfg, device, seed)
    if _channels_last(cfg, device):
        module = module.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        module.compile()  # in place: the module keeps its type, names and parameters
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    budget = cfg.budget
    plan = TaskPlan(measure=budget.measure, max_steps=cfg.train.max_steps, budget=budget.flops_per_task,
                    fractions=milestone_fractions(budget.milestones, budget.first_milestone))
    holder: dict[str, L.Trainer] = {}

    def evaluate_on(loader: BatchLoader) -> float:
        return evaluate(module, loader, meter, num_classes=task.num_classes, multi_label=task.multi_label,
                        forward_context=holder["trainer"].precision_plugin.forward_context)

    steps_per_epoch = len(train_loader)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=precision,
        # with a budget the step count is decided after the first counted step
        max_steps=-1 if plan.budget is not None else cfg.train.max_steps,
        max_epochs=-1 if plan.budget is not None else math.ceil(cfg.train.max_steps / steps_per_epoch),
        deterministic=cfg.trainer.deterministic,
        benchmark=cfg.trainer.benchmark if cfg.trainer.benchmark is not None else (device.type == "cuda" and not cfg.trainer.deterministic),
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=min(cfg.trainer.log_every_n_steps, cfg.train.max_steps),
        logger=sink.lightning_logger() if sink is not None else False,
        callbacks=[
            FlopMeterCallback(meter),
            FiniteLossCallback(task.key),
            ScheduleCallback(meter, plan, lambda: evaluate_on(dev_loader), steps_per_epoch=steps_per_epoch),
            CheckpointCallback(store.task_checkpoint(index), cfg.train.checkpoint_every_n_steps, train_loader),
            *([_progress_bar()] if cfg.trainer.progress_bar else []),
        ],
        default_root_dir=str(run_dir),
    )
    holder["trainer"] = trainer
    if trainer.strategy.root_device != device:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices} selects {trainer.strategy.root_device}; "
                          "nevisbench runs one device per process (use DDP launchers for more)")

    checkpoint = store.task_checkpoint(index)
    start = time.perf_counter()
    failure = None
    try:
        trainer.fit(module, train_dataloaders=train_loader, weights_only=True,
                    ckpt_path=str(checkpoint) if checkpoint.exists() else None)
    except TaskFailed as exc:
        failure = str(exc)
    except SystemExit:
        # Lightning turns Ctrl-C into graceful shutdown + sys.exit(1), ignoring further SIGINTs
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    test_error = evaluate_on(test_loader) if failure is None else None
    wall = time.perf_counter() - start
    if failure is None:
        learner.end_task(task, module)
    tally = meter.end_task()

    result = {
        "task": task.key,
        "index": index,
        "domain": task.domain,
        "num_classes": task.num_classes,
        "metric": "1-mAP" if task.multi_label else "top1_error",  # test_error = 1 - mean average precision
        "test_error": test_error,
        "dev_error": plan.records[-1]["dev_error"] if plan.records else None,
        "steps": int(trainer.global_step),
        "flops": tally.as_dict(),
        "cumulative_flops": meter.stream.total,
        "anytime": plan.records,
        "wall_seconds": wall,
        "throughput": _throughput(tally, int(trainer.global_step) * cfg.data.batch_size, device, precision, cfg.trainer.peak_flops),
        "peak_memory_bytes": _peak_memory(device),
        "data_on_device": train_loader.images.device == device,
        "num_train": len(data.train),
        "num_test": len(data.test),
        "status": "ok" if failure is None else "failed",
    }
    if failure is not None:
        result["error"] = failure
    if plan.budget is not None:
        spent = tally.measure(plan.measure, "train")
        result["budget"] = {"flops_per_task": plan.budget, "measure": plan.measure, "spent": spent, "ratio": spent / plan.budget}
    # commit order: the state after this task first, then its results line (the commit point);
    # a crash in between leaves the line missing and the previous state in place
    store.save_task_state(index, {"learner": learner.state_dict(), "meter": asdict(meter.stream)})
    store.append(result)
    crash_point(f"after_task:{index}")
    store.prune_state(index)
    if sink is not None:
        sink.log_task(result)
    return result
