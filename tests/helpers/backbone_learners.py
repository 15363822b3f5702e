"""Learners that bring their own network (for tests/test_backbones.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nevisbench import Learner, LearnerConfig
from nevisbench.backbones import create_backbone


class _Tiny(nn.Module):
    """A network no registry knows: conv, pool, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x).relu()).flatten(1)


@dataclass
class OwnNetworkConfig(LearnerConfig):
    name: str = "own"
    width: int = 8  # a learner.* key a search could draw


class OwnNetwork(Learner):
    """Declares it brings its own network: the runner builds none."""

    Config = OwnNetworkConfig
    brings_backbone = True

    def prepare(self, backbone):
        assert backbone is None
        self.feature_dim = 8
        return _Tiny()


class OwnRegistryNetwork(Learner):
    """Declares nothing, drops the run's backbone and returns a registry MobileNetV3 (the old stealth way)."""

    def prepare(self, backbone):
        network, self.feature_dim = create_backbone("mobilenet_v3_small", image_size=self.context.image_size)
        return network


class NoFeatureDim(Learner):
    """Brings its own network but forgets to say its feature width."""

    brings_backbone = True

    def prepare(self, backbone):
        return _Tiny()
