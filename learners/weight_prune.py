"""`weight_prune`: unstructured magnitude (or random) pruning of convolution weights, fixed masks.

Masks use `torch.nn.utils.prune`: the layer computes weight = weight_orig * weight_mask at every
forward, so pruned weights stay exactly zero through training, and the FLOP meter charges each
layer its kept fraction (algorithmic FLOPs). Nothing runs faster: masked convs execute densely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.learners._pruning import PruneConfig, scores
from nevisbench.learners._resnet import block_convs

__all__ = ["WeightPruneConfig", "WeightPruneLearner"]


@dataclass
class WeightPruneConfig(PruneConfig):
    name: str = "weight_prune"
    include_linear: bool = False  # also prune Linear layers of the backbone (ResNets have none)


class WeightPruneLearner(Learner):
    Config = WeightPruneConfig

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        layers = [conv for _, conv in block_convs(backbone, include_stem=cfg.prune_stem)]
        if cfg.include_linear:
            layers += [m for m in backbone.modules() if isinstance(m, nn.Linear)]
        generator = torch.Generator().manual_seed(self.context.seed)
        importance = [scores(layer.weight.detach(), cfg.signal, generator) for layer in layers]
        if cfg.scope == "global":
            flat = torch.cat([s.flatten() for s in importance])
            keep = flat.numel() - round(cfg.sparsity * flat.numel())
            threshold = torch.topk(flat, keep).values.min() if keep > 0 else float("inf")
            masks = [(s >= threshold).float() for s in importance]
        else:
            masks = [_top_fraction(s, 1 - cfg.sparsity) for s in importance]
        for layer, mask in zip(layers, masks):
            prune.custom_from_mask(layer, "weight", mask)
        return backbone


def _top_fraction(score: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """A 0/1 mask keeping the `keep_fraction` highest-scoring elements (ties broken by position)."""
    keep = round(keep_fraction * score.numel())
    mask = torch.zeros(score.numel())
    mask[torch.topk(score.flatten(), keep).indices] = 1.0
    return mask.view_as(score)
