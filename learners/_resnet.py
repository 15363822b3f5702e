"""Helpers shared by the built-in learners: the parts of a torchvision ResNet backbone."""

from __future__ import annotations

from typing import cast

from torch import nn

from nevisbench.errors import PluginError

__all__ = ["stem", "blocks", "block_convs"]


def _check(backbone: nn.Module) -> None:
    if not all(hasattr(backbone, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
        raise PluginError(f"This learner needs a torchvision ResNet backbone, got {type(backbone).__name__}")


def stem(backbone: nn.Module) -> list[nn.Module]:
    """The stem's modules with parameters (conv1, bn1)."""
    _check(backbone)
    return [cast(nn.Module, backbone.conv1), cast(nn.Module, backbone.bn1)]


def blocks(backbone: nn.Module) -> list[nn.Module]:
    """The four residual stages, numbered 0..3 as in the paper (torchvision's layer1..layer4)."""
    _check(backbone)
    return [cast(nn.Module, getattr(backbone, f"layer{i}")) for i in range(1, 5)]


def block_convs(backbone: nn.Module, *, include_stem: bool = True, include_downsample: bool = True) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of every convolution of the stem and the four stages."""
    _check(backbone)
    found = [("conv1", cast(nn.Conv2d, backbone.conv1))] if include_stem else []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d) and name.startswith("layer") and (include_downsample or "downsample" not in name):
            found.append((name, module))
    return found
