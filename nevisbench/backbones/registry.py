"""The backbone registry (timm-style): `register_backbone` / `list_backbones` / `create_backbone`.

A backbone is a network that maps images (batch, 3, size, size) to pooled features (batch, dim).
An entry is a builder `fn(*, image_size) -> nn.Module` (the classifier already removed) plus facts
known without building it: its family (the learners' rules are per family), the smallest image size
it accepts, the multiple the size must be of (a ViT's patch), whether `weights=imagenet` exists.
`feature_dim` is never declared: `create_backbone` derives it from one dry forward at the run's
image size, which also proves the network accepts that size. Names are looked up without importing
torchvision, so configs validate fast; builders import it when called.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nevisbench.errors import ConfigError, choice_error

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BackboneSpec", "FAMILIES", "register_backbone", "list_backbones", "backbone_spec", "check_image_size",
           "create_backbone", "REGISTRY_TAG"]

# What each family's networks look like, for the learners' one-line refusals.
FAMILIES = {
    "resnet": "torchvision ResNet with conv1, layer1..layer4: resnet, resnext, wide_resnet",
    "mobilenet": "MobileNet v2/v3 (inverted residuals)",
    "efficientnet": "EfficientNet v1/v2 (MBConv)",
    "convnext": "ConvNeXt (7x7 depthwise convs, Linear pointwise layers)",
    "regnet": "RegNet X/Y",
    "vit": "Vision Transformer (patch embedding, attention blocks)",
}
# The attribute `create_backbone` sets on every module it builds: its registry name. The runner
# reads it to name the architecture that ran, even inside a learner's wrapper.
REGISTRY_TAG = "_nevisbench_backbone"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[..., nn.Module]  # fn(*, image_size) -> feature extractor (no classifier)
    family: str
    source: str  # torchvision | nevisbench
    pretrained: bool  # torchvision has ImageNet weights for it (backbone.weights=imagenet)
    min_image_size: int = 8
    image_multiple: int = 1  # data.image_size must be a multiple of this (a ViT's patch size)
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, family: str, source: str = "nevisbench", pretrained: bool = False,
                      min_image_size: int = 8, image_multiple: int = 1,
                      description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register `fn(*, image_size) -> nn.Module` (pooled features) as backbone `name`.
    A name registered twice is refused; so is a family not in `FAMILIES`."""
    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ConfigError(f"Backbone '{name}' is registered twice ({_REGISTRY[name].build.__qualname__} "
                              f"and {fn.__qualname__})")
        if family not in FAMILIES:
            raise choice_error(f"family for backbone '{name}':", family, FAMILIES)
        _REGISTRY[name] = BackboneSpec(name, fn, family, source, pretrained, min_image_size, image_multiple,
                                       description)
        return fn
    return decorate


def list_backbones(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Registered names matching the glob `pattern` (and `family`), sorted."""
    return sorted(n for n, s in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and family in (None, s.family))


def backbone_spec(name: str) -> BackboneSpec:
    """The entry `name`; an unknown name is one line naming the valid ones."""
    if name not in _REGISTRY:
        raise choice_error("value for 'backbone.name':", name, _REGISTRY, fix="See `nevisbench list backbones`.")
    return _REGISTRY[name]


def check_image_size(name: str, image_size: int) -> None:
    """Refuse an image size the backbone cannot take (before anything is built or written)."""
    spec = backbone_spec(name)
    if image_size < spec.min_image_size or image_size % spec.image_multiple:
        need = [f">= {spec.min_image_size}"] + ([f"a multiple of {spec.image_multiple}"] if spec.image_multiple > 1 else [])
        raise ConfigError(f"Invalid value for 'data.image_size': {image_size}; backbone '{name}' needs "
                          f"{' and '.join(need)}")


def create_backbone(name: str, *, image_size: int) -> tuple[nn.Module, int]:
    """Build `name` with random weights for `image_size` images; return (module, feature_dim)."""
    import torch

    check_image_size(name, image_size)
    model = backbone_spec(name).build(image_size=image_size)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, image_size, image_size))
    except Exception as exc:  # a size the facts above did not foresee
        raise ConfigError(f"Backbone '{name}' cannot take data.image_size={image_size}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"Backbone '{name}' returns {shape}, not pooled features of shape (batch, dim)")
    setattr(model, REGISTRY_TAG, name)
    return model, int(out.shape[1])
