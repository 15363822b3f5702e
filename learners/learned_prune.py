"""`learned_prune`: structure learned per task to a FLOP target (CoFi-style L0 gates on a ResNet),
then physically compacted and finetuned; the structure can transfer along the stream.

Per task: a **prune** phase (gates and weights train together; the network runs densely and is
charged densely; the log-alphas and the Lagrange multipliers have their own Adam optimizer and
constant LRs), then **compaction** at `prune_fraction` of the task's planned steps (closed channels
and residual branches are removed, kernel gates become `weight_mask` buffers, the deterministic
gate values are folded into BatchNorm so the function is unchanged), then a **finetune** phase on
the smaller network. The Lagrangian `l1 (s - t) + l2 (s - t)^2` drives the expected sparsity s to
the target t, ramped from the initial expected sparsity to `sparsity` over `warmup_fraction` of
the prune phase; a last calibration (one shift of the fine log-alphas' keep counts) corrects what
is left, and is recorded. Transfer modes: `_transfer.py`. See docs/learned-prune.md.

Modules: `_gates.py` (hard-concrete gates), `_structure.py` (gated units as data, gated forward,
FLOP model, compaction), `_lagrangian.py` (ramp, Lagrangian, structure optimizer, calibration),
`_prune_module.py` (the task module), `_transfer.py` (what task t-1 hands to task t).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nevisbench.api.learner import Learner, LearnerConfig, TaskInfo, clone_module
from nevisbench.errors import ConfigError, choice_error
from nevisbench.learners._prune_module import LearnedPruneModule
from nevisbench.learners._resnet import blocks
from nevisbench.learners._structure import FlopModel, layout, make_gates, overlap
from nevisbench.learners._transfer import AUXILIARY, TRANSFER_MODES, handover, setup

__all__ = ["LearnedPruneConfig", "LearnedPruneLearner", "LearnedPruneModule", "TRANSFER_MODES"]


@dataclass
class LearnedPruneConfig(LearnerConfig):
    name: str = "learned_prune"
    sparsity: float = 0.5  # keep (1 - sparsity) of the dense training FLOPs
    granularity: str = "channel"  # channel | kernel (also one gate per KxK kernel of the 3x3 convs)
    block_gates: bool = True  # one gate per residual branch
    prune_fraction: float = 0.5  # share of the task's steps spent learning the structure
    warmup_fraction: float = 0.5  # share of the prune phase over which the target ramps
    gate_lr: float = 0.05  # Adam LR of the log-alphas (own optimizer, constant)
    lagrange_lr: float = 1.0  # Adam LR of the multipliers (gradient ascent, own optimizer, constant)
    transfer: str = "none"  # none | masks_weights | masks_only | weights_only | single | multi | delta
    task_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # loss weights (task t, task t-1): single | multi | delta
    delta_penalty: float = 0.01  # L2 on the per-task gate offsets (transfer=delta)
    distill: bool = False  # MSE to the frozen pretrained backbone's four stage outputs
    distill_weight: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"Invalid value for 'learner.sparsity': {self.sparsity}; it must be in [0, 1)")
        if self.granularity not in ("channel", "kernel"):
            raise choice_error("value for 'learner.granularity':", self.granularity, ("channel", "kernel"))
        if self.transfer not in TRANSFER_MODES:
            raise choice_error("value for 'learner.transfer':", self.transfer, TRANSFER_MODES)
        for key in ("prune_fraction", "warmup_fraction"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {getattr(self, key)}; it must be in (0, 1]")
        for key in ("gate_lr", "lagrange_lr", "delta_penalty", "distill_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {getattr(self, key)}; it must be >= 0")
        weights = list(self.task_weights)
        if len(weights) != 2 or min(weights) < 0 or max(weights) == 0:
            raise ConfigError(f"Invalid value for 'learner.task_weights': {weights}; it must be two weights >= 0 "
                              "(task t, task t-1), not both 0, e.g. [1,1], [1,2] or [2,1]")


class LearnedPruneLearner(Learner):
    Config = LearnedPruneConfig
    config: LearnedPruneConfig
    backbone_families = ("resnet",)  # its gates sit on ResNet blocks (layer1..layer4)
    supports_ddp = False  # compaction rebuilds the convolutions mid-fit

    def __init__(self, config: LearnedPruneConfig, context) -> None:
        super().__init__(config, context)
        if config.transfer in AUXILIARY and getattr(context, "data", None) is None:
            raise ConfigError(f"learner.transfer={config.transfer} trains on task t-1's training set, which this "
                              "harness does not hand to learners (context.data is None); valid here: "
                              f"{', '.join(m for m in TRANSFER_MODES if m not in AUXILIARY)}")
        self.history: list[dict[str, Any]] = []  # one structure record per finished task
        self.previous: dict[str, Any] | None = None  # what task t-1 hands to task t
        self._pretrained: nn.Module | None = None

    def prepare(self, backbone: nn.Module) -> nn.Module:
        blocks(backbone)  # a clear error for a backbone that is not a torchvision ResNet
        self._pretrained = clone_module(backbone)  # for masks_only and the distillation teacher
        return backbone

    def begin_task(self, task, backbone: nn.Module) -> LearnedPruneModule:
        cfg = self.config
        pretrained = self._pretrained if self._pretrained is not None else clone_module(backbone)
        seed = self.context.learner_seed(task.index)
        units = layout(backbone, cfg.granularity, cfg.block_gates)
        flops = FlopModel(backbone, units, self.context.image_size, self.feature_dim, task.num_classes)
        gates = make_gates(backbone, units, torch.Generator().manual_seed(seed))
        carried = setup(cfg, self.previous, backbone=backbone, pretrained=pretrained, units=units, flops=flops,
                        gates=gates, data=getattr(self.context, "data", None), seed=seed)
        return LearnedPruneModule(
            backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train, cfg=cfg,
            units=units, flops=flops, gates=gates, seed=seed, aux=carried.aux, fixed=carried.fixed,
            teacher=clone_module(pretrained) if cfg.distill else None)

    def end_task(self, task, module: LearnedPruneModule) -> None:
        mask = module.unit_mask()
        record = {"task": task.key, **module.record,
                  "overlap_prev": None if self.previous is None else overlap(mask, self.previous["mask"])}
        self.history.append(record)
        dense = module.decompact().cpu()
        self.previous = handover(self.config, task, module, dense, mask)

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """The structure learned on `task` (the latest finished task), for its results line."""
        return dict(self.history[-1]) if self.history else {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.previous = state.get("previous")
