"""Backbones: a small registry of networks that map images to pooled features (timm-style:
`register_backbone`, `list_backbones`, `create_backbone`), filled with torchvision's classification
models and `vit_tiny`; `backbone.name` picks one. See docs/writing-a-learner.md, "Bring a backbone"."""

from nevisbench.backbones import torchvision_models as _torchvision_models  # noqa: F401  (registers them)
from nevisbench.backbones.registry import (
    FAMILIES,
    REGISTRY_TAG,
    BackboneSpec,
    backbone_spec,
    check_image_size,
    create_backbone,
    list_backbones,
    register_backbone,
)
from nevisbench.backbones.weights import load_into, load_weights

__all__ = ["FAMILIES", "REGISTRY_TAG", "BackboneSpec", "backbone_spec", "check_image_size", "create_backbone",
           "list_backbones", "register_backbone", "load_into", "load_weights"]
