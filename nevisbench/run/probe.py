"""Per-image FLOPs of one training step and one evaluation pass of the configured learner
(`nevisbench flops`), measured by running them for real under the FLOP meter."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from nevisbench.api.learner import TaskInfo
from nevisbench.compute.flops import FlopMeter, StepFlops
from nevisbench.errors import PluginError, TaskFailed
from nevisbench.registry import get_learner_class
from nevisbench.run.footprint import check_fits
from nevisbench.run.learner.backbone import describe_backbone, start_backbone
from nevisbench.run.learner.data import StreamData
from nevisbench.run.learner.plugin import build_learner, plugin_hook
from nevisbench.run.learner.scenario import Scenario
from nevisbench.run.task.callbacks import FlopMeterCallback
from nevisbench.run.task.evaluation import evaluate
from nevisbench.run.task.lightning import quiet_lightning
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import BatchLoader, Split, TaskData

__all__ = ["step_flops"]


def _table(step: StepFlops) -> dict[str, dict[str, float]]:
    return {
        "algorithmic": {"forward": step.algo_forward, "backward": step.algo_backward, "total": step.algo_forward + step.algo_backward},
        "executed": {"forward": step.forward, "backward": step.backward, "total": step.forward + step.backward},
    }


def _probe_data(num_classes: int, batch_size: int, size: int) -> TaskData:
    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=generator),
                  torch.arange(batch_size) % num_classes)
    return TaskData(key="probe", num_classes=num_classes, train=split, dev=split, test=split)


def _train_step(name: str, task: TaskInfo, module: L.LightningModule, data: TaskData, meter: FlopMeter,
                batch_size: int, size: int) -> StepFlops:
    """One counted training step of `module` on the probe's batch, per image."""
    loader = BatchLoader(data.train, batch_size=batch_size, image_size=size, train=True, augment=False,
                         indices=bool(getattr(module, "batch_indices", False)))
    meter.start_task()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[FlopMeterCallback(meter)])
    with plugin_hook(name, f"training on {task.key}"):
        trainer.fit(module, train_dataloaders=loader)
    if meter.last_train_cost is None:
        raise RuntimeError(f"the probe's training step on {task.key} was not counted")
    return meter.last_train_cost.scaled(1.0 / batch_size)


def _begin(learner: Any, name: str, task: TaskInfo, backbone: torch.nn.Module) -> L.LightningModule:
    with plugin_hook(name, f"begin_task({task.key})"):
        module = learner.begin_task(task, backbone)
    if not isinstance(module, L.LightningModule):
        raise PluginError(f"Learner '{name}'.begin_task must return a LightningModule, got {type(module).__name__}")
    return module


def step_flops(cfg: DictConfig, *, num_classes: int = 1000, batch_size: int = 2) -> dict[str, Any]:
    """{'train_step': {...}, 'steady_step': {...}, 'eval_step': {...}} per image, for `cfg`'s learner
    and backbone: the first task's training step, the second task's (in `cfg.scenario`, after the
    learner's `end_task` on the first: what a replay or regularising learner spends from then on),
    and an evaluation pass."""
    quiet_lightning()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)
    L.seed_everything(cfg.seed, verbose=False)
    if not getattr(get_learner_class(cfg.learner.name), "brings_backbone", False):
        check_fits(cfg, batch_size=batch_size)  # before anything is materialised
    backbone, feature_dim = start_backbone(cfg)
    size = cfg.data.image_size
    data = _probe_data(num_classes, batch_size, size)
    tasks = [TaskInfo(key=key, name=key, index=i, domain="object", num_classes=num_classes)
             for i, key in enumerate(("probe", "probe_2"))]
    specs = [TaskSpec(key=t.key, name=t.name, domain=t.domain, num_classes=num_classes, load=lambda **_: data)
             for t in tasks]
    stream = StreamData(cfg, specs, load=lambda spec, seed: data)  # the probe's batch is each task's split
    learner = build_learner(cfg, feature_dim, data=stream)
    name = cfg.learner.name
    # every hook through the plugin wrapper, as `run` calls it: a plugin that raises is one line (exit 2)
    with plugin_hook(name, "prepare()"):
        prepared = learner.prepare(cast(torch.nn.Module, backbone))  # None: the learner brings_backbone
    described = describe_backbone(learner, backbone, prepared)  # {name, arch, params, source}: what ran
    scenario, meter = Scenario(cfg.scenario, prepared, learner_name=name), FlopMeter()
    stream.enter(0, data)
    module = _begin(learner, name, tasks[0], scenario.start())
    train = _train_step(name, tasks[0], module, data, meter, batch_size, size)
    eval_loader = BatchLoader(data.test, batch_size=batch_size, image_size=size, train=False)
    with plugin_hook(name, "forward() while evaluating probe"), contextlib.suppress(TaskFailed):
        evaluate(module, eval_loader, meter, num_classes=num_classes)  # counted before outputs are checked: a
        # probe's random images through untrained statistics may give NaN, which a FLOP count does not mind
    evaluation = meter.cached(("eval", (3, size, size), torch.float32))
    if evaluation is None:
        raise RuntimeError("the probe's evaluation step was not counted")
    with plugin_hook(name, f"end_task({tasks[0].key})"):
        learner.end_task(tasks[0], module)
    scenario.finish(module)
    stream.enter(1, data)
    steady = _train_step(name, tasks[1], _begin(learner, name, tasks[1], scenario.start()), data, meter, batch_size, size)
    return {
        "learner": cfg.choices.learner,
        "learner_config": OmegaConf.to_container(cfg.learner, resolve=True),
        "backbone": described,
        "image_size": size,
        "num_classes": num_classes,
        "per": "image",
        "scenario": cfg.scenario,
        "train_step": _table(train),
        "steady_step": _table(steady),
        "eval_step": _table(evaluation),
    }
