"""`truncated` (`block_0toX_ft_all`): keep the stem and blocks 0..X, drop the later blocks, put a
new head on the last kept block's pooled features, and train everything that is left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from nevisbench.api.learner import Learner, LearnerConfig
from nevisbench.errors import ConfigError
from nevisbench.learners._resnet import blocks

__all__ = ["TruncatedConfig", "TruncatedLearner"]


@dataclass
class TruncatedConfig(LearnerConfig):
    name: str = "truncated"
    last_block: int = 2  # keep blocks 0..last_block (0..3; 3 keeps the whole backbone)

    def validate(self) -> None:
        if not 0 <= self.last_block <= 3:
            raise ConfigError(f"Invalid value for 'learner.last_block': {self.last_block}; it must be 0..3")


class TruncatedLearner(Learner):
    Config = TruncatedConfig
    config: TruncatedConfig
    backbone_families = ("resnet",)  # it keeps the first ResNet stages (layer1..layer4)

    def prepare(self, backbone: nn.Module) -> nn.Module:
        kept = blocks(backbone)[: self.config.last_block + 1]
        stem_modules = [cast(nn.Module, getattr(backbone, name)) for name in ("conv1", "bn1", "relu", "maxpool")]
        truncated = nn.Sequential(*stem_modules, *kept,
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with torch.no_grad():
            probe = torch.zeros(2, 3, self.context.image_size, self.context.image_size)
            self.feature_dim = int(truncated.eval()(probe).shape[1])
        return truncated.train()
