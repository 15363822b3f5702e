"""`channel_prune`: structured channel pruning that physically removes channels.

Torch-Pruning's dependency graph (DepGraph) keeps channels consistent across residual connections
(a block's output channels, its shortcut and the next block's inputs are pruned together). Removing
a fraction r = 1 - sqrt(1 - sparsity) of the channels of every layer keeps about (1 - sparsity) of
the FLOPs, since a conv's FLOPs scale with input x output channels. The convs really shrink, so
executed FLOPs equal algorithmic ones. The stem's output is kept unless `prune_stem=true`; the
head is always new (it reads the pruned feature width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.learners._pruning import PruneConfig

__all__ = ["ChannelPruneConfig", "ChannelPruneLearner"]


@dataclass
class ChannelPruneConfig(PruneConfig):
    name: str = "channel_prune"
    prune_stem: bool = False  # keep the stem's output channels (DESIGN: stem and head stay out)

    @property
    def channel_ratio(self) -> float:
        return 1.0 - math.sqrt(1.0 - self.sparsity)


class ChannelPruneLearner(Learner):
    Config = ChannelPruneConfig

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        if cfg.sparsity == 0:
            return backbone
        import torch_pruning as tp

        torch.manual_seed(self.context.seed)  # RandomImportance draws from the global generator
        importance = tp.importance.RandomImportance() if cfg.signal == "random" else tp.importance.MagnitudeImportance(p=1)
        example = torch.randn(1, 3, self.context.image_size, self.context.image_size)
        pruner = tp.pruner.BasePruner(
            backbone,
            example,
            importance=importance,
            pruning_ratio=cfg.channel_ratio,
            global_pruning=cfg.scope == "global",
            ignored_layers=[] if cfg.prune_stem else [backbone.conv1],
        )
        pruner.step()
        with torch.no_grad():
            self.feature_dim = int(backbone.eval()(example).shape[1])
        return backbone.train()
