"""`weight_prune`: unstructured magnitude (or random) pruning of convolution weights, fixed masks.

Masks use `torch.nn.utils.prune`: the layer computes weight = weight_orig * weight_mask at every
forward, so pruned weights stay exactly zero through training, and the FLOP meter charges each
layer its kept fraction (algorithmic FLOPs). Nothing runs faster: masked convs execute densely.
Every output channel keeps at least its largest weight, so no layer is emptied; the stem
(`prune_stem=true`) follows the same rule as every other conv: it keeps (1 - sparsity) of its
weights, and at least one weight per output channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.learners._pruning import PruneConfig, global_masks, scores, top_mask
from nevisbench.learners._resnet import block_convs

__all__ = ["WeightPruneConfig", "WeightPruneLearner"]


@dataclass
class WeightPruneConfig(PruneConfig):
    name: str = "weight_prune"
    include_linear: bool = False  # also prune Linear layers of the backbone (ResNets have none)


class WeightPruneLearner(Learner):
    Config = WeightPruneConfig
    config: WeightPruneConfig

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        layers = [conv for _, conv in block_convs(backbone, include_stem=cfg.prune_stem)]
        if cfg.include_linear:
            layers += [m for m in backbone.modules() if isinstance(m, nn.Linear)]
        generator = torch.Generator().manual_seed(self.context.seed)
        importance = [scores(layer.weight.detach(), cfg.signal, generator) for layer in layers]
        if cfg.scope == "global":
            masks = global_masks(importance, cfg.sparsity)
        else:
            masks = [top_mask(s, 1 - cfg.sparsity) for s in importance]
        for layer, mask in zip(layers, masks):
            prune.custom_from_mask(layer, "weight", mask)
        return backbone

