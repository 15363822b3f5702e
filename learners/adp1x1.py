"""`adp1x1`: residual 1x1 convolutional adapters (Rebuffi et al. 2017, parallel form).

Each targeted convolution of each block gets a 1x1 conv in parallel: y = conv(x) + adapter(x),
with the conv's stride, initialised to zero so the network starts as the pretrained one. The
backbone is frozen; adapters, BatchNorm layers and the head train. `targets=spatial` (default)
adapts the 3x3 convolutions, `targets=all` every convolution of the blocks (not the shortcuts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from nevisbench.api.learner import Learner, LearnerConfig, TaskInfo, replace_submodule
from nevisbench.errors import choice_error
from nevisbench.learners._resnet import block_convs

if TYPE_CHECKING:
    import lightning as L

__all__ = ["Adp1x1Config", "Adp1x1Learner", "ParallelAdapter"]


@dataclass
class Adp1x1Config(LearnerConfig):
    name: str = "adp1x1"
    targets: str = "spatial"  # spatial (3x3 convs) | all

    def validate(self) -> None:
        if self.targets not in ("spatial", "all"):
            raise choice_error("value for 'learner.targets':", self.targets, ("spatial", "all"))


class ParallelAdapter(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.adapter = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=_pair(conv.stride), bias=False)
        nn.init.zeros_(self.adapter.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.adapter(x)


class Adp1x1Learner(Learner):
    Config = Adp1x1Config
    config: Adp1x1Config
    backbone_families = ("resnet",)  # its adapters sit beside ResNet block convs (layer1..layer4)

    def prepare(self, backbone: nn.Module) -> nn.Module:
        for name, conv in block_convs(backbone, include_stem=False, include_downsample=False):
            if self.config.targets == "all" or conv.kernel_size != (1, 1):
                replace_submodule(backbone, name, ParallelAdapter(conv))
        return backbone

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> L.LightningModule:
        for name, param in backbone.named_parameters():
            # trainable: adapters and BatchNorm affine parameters; frozen: every other weight
            param.requires_grad_(".adapter." in name or _is_bn(backbone, name))
        return self.task_module(backbone, task)


def _is_bn(root: nn.Module, param_name: str) -> bool:
    owner = root.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else root
    return isinstance(owner, nn.BatchNorm2d)
