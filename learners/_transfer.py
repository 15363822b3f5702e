"""learned_prune along a stream: what task t-1 hands to task t, per `learner.transfer` (the second
paper's modes). See the table in docs/learned-prune.md.

- masks_weights / masks_only: task t-1's 0/1 mask is FIXED; task t only finetunes, from task t-1's
  weights (masks_weights) or the pretrained ones (masks_only).
- weights_only: task t-1's weights with a RANDOM mask at the target sparsity (the control); the
  task only finetunes.
- single / multi / delta: task t-1's training set is the auxiliary task (`context.data`), trained
  with loss weights `task_weights`, every batch charged; single shares task t-1's calibrated gates,
  multi and delta learn fresh gates for task t next to task t-1's (delta: tied by an L2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench.learners._gates import GateSet
from nevisbench.learners._lagrangian import calibrate
from nevisbench.learners._prune_module import Auxiliary, LearnedPruneModule
from nevisbench.learners._structure import BlockUnits, FlopModel, Gates, binary, make_gates

__all__ = ["TRANSFER_MODES", "AUXILIARY", "Carried", "setup", "handover", "random_mask"]

TRANSFER_MODES = ("none", "masks_weights", "masks_only", "weights_only", "single", "multi", "delta")
CARRY_WEIGHTS = ("masks_weights", "weights_only", "single", "multi", "delta")  # start from task t-1's weights
FIXED_MASK = ("masks_weights", "masks_only")  # task t-1's mask, fixed
AUXILIARY = ("single", "multi", "delta")  # task t-1's training set as the auxiliary task


@dataclass
class Carried:
    fixed: tuple[Gates, str] | None = None  # a 0/1 mask the task only finetunes under, and its origin
    aux: Auxiliary | None = None


def random_mask(units: list[BlockUnits], gates: GateSet, flops: FlopModel, sparsity: float,
                seed: int) -> Gates:
    """A uniformly random 0/1 mask over the channel (and kernel) units at the target sparsity,
    every residual branch kept (the weights_only control)."""
    generator = torch.Generator().manual_seed(seed)
    alphas = {n: torch.randn(a.shape, generator=generator) for n, a in gates.log_alpha.items()}
    for b in units:
        if b.block is not None:
            alphas[b.block] = torch.full_like(alphas[b.block], 10.0)  # open
    return binary(calibrate(alphas, units, flops, sparsity).z)


def setup(cfg, prev: dict[str, Any] | None, *, backbone: nn.Module, pretrained: nn.Module, units: list[BlockUnits],
          flops: FlopModel, gates: GateSet, data: Any, seed: int) -> Carried:
    """Load what task t-1 hands over into `backbone` and `gates`; the fixed mask or auxiliary task."""
    mode = cfg.transfer
    if prev is None or mode == "none":
        return Carried()
    if mode in CARRY_WEIGHTS:
        backbone.load_state_dict(prev["backbone"])
    elif mode == "masks_only":
        backbone.load_state_dict(pretrained.state_dict())
    if mode in FIXED_MASK:
        return Carried(fixed=({n: v.clone() for n, v in prev["z"].items()}, f"transferred ({mode})"))
    if mode == "weights_only":
        return Carried(fixed=(random_mask(units, gates, flops, cfg.sparsity, seed + 7919), "random (weights_only)"))
    head = nn.Linear(prev["head"]["weight"].shape[1], prev["num_classes"])
    head.load_state_dict(prev["head"])
    if mode == "single":
        gates.load_values(prev["alphas"])  # calibrated: at the target
        aux_gates = gates
    else:
        aux_gates = make_gates(backbone, units, torch.Generator().manual_seed(seed))
        aux_gates.load_values(prev["alphas"])
    weights = (float(cfg.task_weights[0]), float(cfg.task_weights[1]))
    return Carried(aux=Auxiliary(data, prev["index"], head, prev["multi_label"], weights, aux_gates))


def handover(cfg, task, module: LearnedPruneModule, dense: nn.Module, mask: torch.Tensor) -> dict[str, Any]:
    """What task t hands to task t+1: its 0/1 mask, its calibrated log-alphas, and per mode its
    weights (dense-shaped) and head."""
    prev: dict[str, Any] = {"task": task.key, "index": task.index, "mask": mask,
                            "z": {n: v.cpu() for n, v in binary(module.z).items()},
                            "alphas": {n: v.cpu() for n, v in module.calibrated_alphas().items()}}
    if cfg.transfer in CARRY_WEIGHTS:
        prev["backbone"] = {k: v.detach().clone() for k, v in dense.state_dict().items()}
    if cfg.transfer in AUXILIARY:
        prev["head"] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        prev["num_classes"], prev["multi_label"] = task.num_classes, task.multi_label
    return prev
