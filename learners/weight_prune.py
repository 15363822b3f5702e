"""`weight_prune`: unstructured magnitude (or random) pruning of convolution weights, fixed masks.

Any convolutional backbone: every `nn.Conv2d` is pruned (the stem is the first one), and with
`include_linear` every `nn.Linear` too (ConvNeXt's pointwise layers are Linear). Not ViTs: their
attention projections are parameters of `nn.MultiheadAttention`, not layers a mask can reach.

Masks use `torch.nn.utils.prune`: the layer computes weight = weight_orig * weight_mask at every
forward, so pruned weights stay exactly zero through training, and the FLOP meter charges each
layer its kept fraction (algorithmic FLOPs). Nothing runs faster: masked convs execute densely.
Every output channel keeps at least its largest weight, so no layer is emptied; the stem
(`prune_stem=true`) follows the same rule as every other conv: it keeps (1 - sparsity) of its
weights, and at least one weight per output channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.learners._pruning import PruneConfig, global_masks, scores, top_mask

__all__ = ["WeightPruneConfig", "WeightPruneLearner"]


@dataclass
class WeightPruneConfig(PruneConfig):
    name: str = "weight_prune"
    include_linear: bool = False  # also prune Linear layers of the backbone (ResNets have none; not those of attention)


class WeightPruneLearner(Learner):
    Config = WeightPruneConfig
    config: WeightPruneConfig
    backbone_families = ("resnet", "mobilenet", "efficientnet", "convnext", "regnet")  # convolutional nets

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        convs: list[nn.Module] = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]  # in order: the stem first
        layers = convs if cfg.prune_stem else convs[1:]
        if cfg.include_linear:
            attention = {id(m) for a in backbone.modules() if isinstance(a, nn.MultiheadAttention) for m in a.modules()}
            layers += [m for m in backbone.modules() if isinstance(m, nn.Linear) and id(m) not in attention]
        generator = torch.Generator().manual_seed(self.context.seed)
        importance = [scores(cast(torch.Tensor, layer.weight).detach(), cfg.signal, generator) for layer in layers]
        if cfg.scope == "global":
            masks = global_masks(importance, cfg.sparsity)
        else:
            masks = [top_mask(s, 1 - cfg.sparsity) for s in importance]
        for layer, mask in zip(layers, masks, strict=False):
            prune.custom_from_mask(layer, "weight", mask)
        return backbone

