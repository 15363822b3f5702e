"""`ft_block` (`ft_block_Xto3`): the stem and blocks 0..X-1 are frozen; blocks X..3 and the head
train. `first_trained_block=4` (config `ft_head`) freezes the whole backbone: a linear probe.

Frozen parts get no gradients (so they cost no backward FLOPs) and stay in eval mode, so their
BatchNorm statistics do not move either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from nevisbench.api.learner import Learner, LearnerConfig, TaskInfo
from nevisbench.errors import ConfigError
from nevisbench.learners._resnet import blocks, stem

if TYPE_CHECKING:
    import lightning as L

__all__ = ["FtBlockConfig", "FtBlockLearner"]


@dataclass
class FtBlockConfig(LearnerConfig):
    name: str = "ft_block"
    first_trained_block: int = 3  # 0..3: train blocks X..3; 4: head only

    def validate(self) -> None:
        if not 0 <= self.first_trained_block <= 4:
            raise ConfigError(f"Invalid value for 'learner.first_trained_block': {self.first_trained_block}; "
                              "it must be 0..3 (ft_block_Xto3) or 4 (ft_head)")


class FtBlockLearner(Learner):
    Config = FtBlockConfig
    config: FtBlockConfig
    backbone_families = ("resnet",)  # its blocks are ResNet's stages (layer1..layer4)

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> L.LightningModule:
        frozen = stem(backbone) + blocks(backbone)[: self.config.first_trained_block]
        return self.task_module(backbone, task, frozen=frozen)
