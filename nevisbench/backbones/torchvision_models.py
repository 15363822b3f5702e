"""torchvision's classification models as backbones, plus `vit_tiny`, a small torchvision
VisionTransformer for small images.

Each is built with `weights=None` (never downloading here; `backbone.weights` loads weights after,
see `nevisbench.backbones.weights`) and its classifier, the last `nn.Linear` of the model, replaced
by `nn.Identity`, so the model returns the pooled (pre-logits) features the classifier read:
MobileNetV3 keeps its 1024-wide pre-logits layer, ConvNeXt its final LayerNorm, EfficientNet and
MobileNetV2 their dropout. Names are torchvision's own (`torchvision.models.list_models()`).
"""

from __future__ import annotations

import functools

from torch import nn

from nevisbench.backbones.registry import register_backbone

__all__ = ["TORCHVISION_BACKBONES", "strip_classifier"]

# family -> (torchvision names, smallest image size; the facts behind it in the comment)
TORCHVISION_BACKBONES: dict[str, tuple[tuple[str, ...], int]] = {
    "resnet": (("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"), 8),
    "mobilenet": (("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"), 8),
    "efficientnet": (tuple(f"efficientnet_b{i}" for i in range(8)) + ("efficientnet_v2_s", "efficientnet_v2_m",
                                                                      "efficientnet_v2_l"), 8),
    # ConvNeXt: a stride-4 stem then three stride-2 downsamplings (2x2 convs without padding): 32 px
    # is the smallest size that leaves each one at least one pixel
    "convnext": (("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), 32),
    "regnet": (tuple(f"regnet_{xy}_{size}" for xy in "xy" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf",
                                                                        "16gf", "32gf")), 8),
}
# ViT: torchvision's builders take `image_size`; it must be a multiple of the patch size.
_VITS = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32}


def strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the model's last `nn.Linear` (its classifier) with `nn.Identity`, in place."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def _torchvision(name: str, *, image_size: int) -> nn.Module:
    """A convolutional net: global pooling makes it take any size (down to its `min_image_size`)."""
    import torchvision

    return strip_classifier(torchvision.models.get_model(name, weights=None))


def _vit(name: str, *, image_size: int) -> nn.Module:
    """torchvision's ViT built for `image_size` (its position embeddings are sized for it)."""
    import torchvision

    return strip_classifier(torchvision.models.get_model(name, weights=None, image_size=image_size))


for _family, (_names, _min_size) in TORCHVISION_BACKBONES.items():
    for _name in _names:
        register_backbone(_name, family=_family, source="torchvision", pretrained=True,
                          min_image_size=_min_size)(functools.partial(_torchvision, _name))
for _name, _patch in _VITS.items():
    register_backbone(_name, family="vit", source="torchvision", pretrained=True, min_image_size=_patch,
                      image_multiple=_patch, description="built with image_size = data.image_size")(
        functools.partial(_vit, _name))


@register_backbone("vit_tiny", family="vit", min_image_size=8, image_multiple=8,
                   description="torchvision VisionTransformer: patch 8, 6 layers, width 192, 3 heads, MLP 768")
def vit_tiny(*, image_size: int) -> nn.Module:
    """A ViT sized for 32-64 px images (DeiT-Ti's width and heads, half its depth, patch 8): 2.7M
    parameters; no pretrained weights exist for it."""
    from torchvision.models.vision_transformer import VisionTransformer

    return strip_classifier(VisionTransformer(image_size=image_size, patch_size=8, num_layers=6, num_heads=3,
                                              hidden_dim=192, mlp_dim=768))
