"""`channel_prune`: structured channel pruning that physically removes channels.

Torch-Pruning's dependency graph (DepGraph) keeps channels consistent across residual connections
(a block's output channels, its shortcut and the next block's inputs are pruned together). A conv's
FLOPs scale with input x output channels, so removing a fraction r of every layer's channels keeps
about (1 - r)^2 of its FLOPs; but the stem's output is kept (unless `prune_stem=true`) and with it
every channel DepGraph couples to it (resnet18's whole layer1 residual stream), so r = 1 -
sqrt(1 - sparsity) keeps too much (0.358 of resnet18's training FLOPs at sparsity 0.75). The
learner therefore calibrates r on the FLOP meter: a bracketing search (bisection) on r, each probe
pruning a copy of the backbone and counting one real training step of it with the meter's `StepCounter`, until the
step costs (1 - sparsity) of the dense one. The fraction does not depend on the image size as long
as every conv's output area scales by the same factor, i.e. between multiples of 32 (the ResNet's
total stride): probes then run at 32 px, exact for 224 px. Other sizes round spatial sizes
differently (80 px counts 2.8% off 32 px at sparsity 0.75), so they are probed at their own size.
The result is cached per backbone structure, sparsity and
image size within the process. The convs really shrink, so executed FLOPs equal algorithmic ones.
Every layer keeps at least one channel (the best one of every group in `scope=global`); the head is
always new (it reads the pruned feature width).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.compute.flops import StepCounter
from nevisbench.learners._pruning import PruneConfig

__all__ = ["ChannelPruneConfig", "ChannelPruneLearner", "calibrated_ratio"]

_STRIDE = 32  # total stride of a torchvision ResNet: sizes that are multiples of it scale every layer alike
_MAX_RATIO = 0.95  # keeps int(0.05 x C) >= 3 channels of the narrowest ResNet layer (C = 64)
_TOLERANCE = 0.01  # relative error of the FLOP fraction at which the search stops (resnet18 moves in
# steps of ~0.8% near X = 0.5: one of 64 channels); half the 2% the benchmark promises
_RATIO_STEP = 1e-3  # ... or when the bracket is narrower than this (1/1000 of the channels)
_CALIBRATED: dict[tuple, float] = {}  # (structure, settings, probe size) -> ratio, per process


@dataclass
class ChannelPruneConfig(PruneConfig):
    name: str = "channel_prune"
    prune_stem: bool = False  # keep the stem's output channels (DESIGN: stem and head stay out)

    @property
    def channel_ratio(self) -> float:
        """The uncalibrated ratio, exact only when every layer shrinks in both widths."""
        return 1.0 - math.sqrt(1.0 - self.sparsity)


class ChannelPruneLearner(Learner):
    Config = ChannelPruneConfig
    config: ChannelPruneConfig
    backbone_families = ("resnet",)  # its dependency rules and stem option are ResNet's (conv1, layer1..layer4)

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        if cfg.sparsity == 0:
            return backbone
        ratio = calibrated_ratio(backbone, cfg, seed=self.context.seed, image_size=self.context.image_size)
        example = torch.randn(1, 3, self.context.image_size, self.context.image_size)
        _prune(backbone, cfg, ratio, seed=self.context.seed, example=example)
        with torch.no_grad():
            self.feature_dim = int(backbone.eval()(example).shape[1])
        return backbone.train()


def calibrated_ratio(backbone: nn.Module, cfg: ChannelPruneConfig, *, seed: int, image_size: int) -> float:
    """The channel-removal ratio whose pruned `backbone` costs (1 - cfg.sparsity) of the dense
    backbone's training-step FLOPs (algorithmic, as the meter counts them), found by `_bisect`."""
    size = _STRIDE if image_size % _STRIDE == 0 else image_size
    key: tuple[Any, ...] = (type(backbone).__name__, tuple(p.shape for p in backbone.parameters()), cfg.sparsity, cfg.scope,
           cfg.signal, cfg.prune_stem, seed, size)
    if cfg.scope == "global":  # which layers lose channels then depends on the weights too
        key += (float(sum(p.detach().abs().sum() for p in backbone.parameters())),)
    if key not in _CALIBRATED:
        example = torch.zeros(2, 3, size, size)  # 2 images: BatchNorm needs > 1 value at 1x1 maps
        dense = _train_step_flops(copy.deepcopy(backbone), example)
        target = 1.0 - cfg.sparsity

        def fraction(ratio: float) -> float:
            pruned = _prune(copy.deepcopy(backbone), cfg, ratio, seed=seed, example=example[:1])
            return _train_step_flops(pruned, example) / dense

        _CALIBRATED[key] = _bisect(fraction, target)
    return _CALIBRATED[key]


def _bisect(fraction, target: float) -> float:
    """The ratio in [0, _MAX_RATIO] where the non-increasing `fraction(ratio)` is closest to `target`.

    A bracketing search: the bracket always holds the answer, and each probe is placed where the
    square root of the fraction, nearly linear in the ratio, interpolates to the target between
    the bracket's ends (regula falsi, Illinois variant, so both ends move). It converges in a few
    probes; it stops within `_TOLERANCE` or when the bracket is narrower than `_RATIO_STEP`.
    """
    low, high = (0.0, 1.0 - math.sqrt(target)), (_MAX_RATIO, math.sqrt(fraction(_MAX_RATIO)) - math.sqrt(target))
    best = (abs(high[1]), high[0])
    side = 0
    while high[0] - low[0] > _RATIO_STEP and best[0] > _TOLERANCE * math.sqrt(target) / 2:
        if high[1] >= 0:  # even the largest ratio keeps too much: take it
            break
        ratio = high[0] - high[1] * (high[0] - low[0]) / (high[1] - low[1])
        ratio = min(max(ratio, low[0] + _RATIO_STEP / 2), high[0] - _RATIO_STEP / 2)
        error = math.sqrt(fraction(ratio)) - math.sqrt(target)
        best = min(best, (abs(error), ratio))
        if error > 0:  # keeps too much: the answer is above `ratio`
            low, high = (ratio, error), (high if side != 1 else (high[0], high[1] / 2))
            side = 1
        else:
            low, high = (low if side != -1 else (low[0], low[1] / 2)), (ratio, error)
            side = -1
    return best[1]


def _prune(backbone: nn.Module, cfg: ChannelPruneConfig, ratio: float, *, seed: int, example: torch.Tensor) -> nn.Module:
    """Remove `ratio` of the channels of `backbone` in place (DepGraph-consistent), and return it."""
    import torch_pruning as tp

    torch.manual_seed(seed)  # RandomImportance draws from the global generator
    importance = tp.importance.RandomImportance() if cfg.signal == "random" else tp.importance.MagnitudeImportance(p=1)
    pruner = tp.pruner.BasePruner(
        backbone,
        example,
        importance=_KeepBest(importance),
        pruning_ratio=ratio,
        global_pruning=cfg.scope == "global",
        ignored_layers=[] if cfg.prune_stem else [backbone.conv1],
    )
    pruner.step()
    return backbone


class _KeepBest:
    """An importance that ranks each group's best channel above everything, so a global threshold
    never removes all channels of a layer (local pruning keeps int(C x (1 - ratio)) >= 1 anyway)."""

    def __init__(self, importance) -> None:
        self.importance = importance

    def __call__(self, group, **kwargs) -> torch.Tensor | None:
        scores = self.importance(group, **kwargs)
        if scores is None or scores.numel() == 0:
            return scores
        scores = scores.clone()
        scores[scores.argmax()] = float("inf")
        return scores


def _train_step_flops(backbone: nn.Module, example: torch.Tensor) -> float:
    """Algorithmic FLOPs of one real training step (forward and backward) of `backbone`."""
    backbone.train()
    with StepCounter(backbone) as counter:
        backbone(example).sum().backward()
    totals = counter.totals()
    return totals.algo_forward + totals.algo_backward
