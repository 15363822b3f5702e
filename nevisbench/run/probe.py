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
from nevisbench.run.task.callbacks import FlopMeterCallback
from nevisbench.run.task.evaluation import evaluate
from nevisbench.run.task.lightning import quiet_lightning
from nevisbench.tasks.loader import BatchLoader, Split

__all__ = ["step_flops"]


def _table(step: StepFlops) -> dict[str, dict[str, float]]:
    return {
        "algorithmic": {"forward": step.algo_forward, "backward": step.algo_backward, "total": step.algo_forward + step.algo_backward},
        "executed": {"forward": step.forward, "backward": step.backward, "total": step.forward + step.backward},
    }


def step_flops(cfg: DictConfig, *, num_classes: int = 1000, batch_size: int = 2) -> dict[str, Any]:
    """{'train_step': {...}, 'eval_step': {...}} per image, for `cfg`'s learner and backbone."""
    quiet_lightning()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)
    L.seed_everything(cfg.seed, verbose=False)
    if not getattr(get_learner_class(cfg.learner.name), "brings_backbone", False):
        check_fits(cfg, batch_size=batch_size)  # before anything is materialised
    backbone, feature_dim = start_backbone(cfg)
    learner = build_learner(cfg, feature_dim, data=StreamData(cfg, ()))  # a stream with no task reached: no data
    name = cfg.learner.name
    # every hook through the plugin wrapper, as `run` calls it: a plugin that raises is one line (exit 2)
    with plugin_hook(name, "prepare()"):
        prepared = learner.prepare(cast(torch.nn.Module, backbone))  # None: the learner brings_backbone
    described = describe_backbone(learner, backbone, prepared)  # {name, arch, params, source}: what ran
    task = TaskInfo(key="probe", name="probe", index=0, domain="object", num_classes=num_classes)
    with plugin_hook(name, "begin_task(probe)"):
        module = learner.begin_task(task, prepared)
    if not isinstance(module, L.LightningModule):
        raise PluginError(f"Learner '{name}'.begin_task must return a LightningModule, got {type(module).__name__}")
    size = cfg.data.image_size
    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=generator),
                  torch.arange(batch_size) % num_classes)
    loader = BatchLoader(split, batch_size=batch_size, image_size=size, train=True, augment=False,
                         indices=bool(getattr(module, "batch_indices", False)))
    meter = FlopMeter()
    meter.start_task()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[FlopMeterCallback(meter)])
    with plugin_hook(name, "training on probe"):
        trainer.fit(module, train_dataloaders=loader)
    eval_loader = BatchLoader(split, batch_size=batch_size, image_size=size, train=False)
    with plugin_hook(name, "forward() while evaluating probe"), contextlib.suppress(TaskFailed):
        evaluate(module, eval_loader, meter, num_classes=num_classes)  # counted before outputs are checked: a
        # probe's random images through untrained statistics may give NaN, which a FLOP count does not mind
    shape = (3, size, size)
    counted, evaluation = meter.last_train_cost, meter.cached(("eval", shape, torch.float32))
    if counted is None or evaluation is None:
        raise RuntimeError("the probe's training or evaluation step was not counted")
    train = counted.scaled(1.0 / batch_size)
    return {
        "learner": cfg.choices.learner,
        "learner_config": OmegaConf.to_container(cfg.learner, resolve=True),
        "backbone": described,
        "image_size": size,
        "num_classes": num_classes,
        "per": "image",
        "train_step": _table(train),
        "eval_step": _table(evaluation),
    }
