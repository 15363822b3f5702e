"""Config checks of the `backbone` section against the registry and the chosen learner: the name
exists, the image size fits it, `weights=imagenet` exists for it, and the learner's rules apply to its
family (`Learner.backbone_families`). Each failure is one line; nothing is built or written."""

from __future__ import annotations

from typing import Any

from nevisbench.backbones.registry import FAMILIES, backbone_spec, check_image_size, list_backbones
from nevisbench.errors import ConfigError

__all__ = ["check_backbone", "check_family"]


def check_family(learner_name: str, families: tuple[str, ...] | None, backbone: str) -> None:
    """Refuse backbone `backbone` for a learner whose rules apply only to `families` (None: any)."""
    family = backbone_spec(backbone).family
    if families is None or family in families:
        return
    valid = [n for f in families for n in list_backbones(family=f)]
    shown = ", ".join(valid[:8]) + (", ..." if len(valid) > 8 else "")
    needs = "; ".join(FAMILIES.get(f, f) for f in families)
    raise ConfigError(f"learner '{learner_name}' needs a {'/'.join(families)} backbone ({needs}); got "
                      f"backbone.name='{backbone}' (family {family}). Valid: {shown}")


def check_backbone(cfg: Any, learner_class: type | None) -> None:
    """All backbone checks of a composed config (`learner_class`: the chosen learner's class)."""
    name = cfg.backbone.name
    spec = backbone_spec(name)  # an unknown name: one line with the valid ones and a did-you-mean
    if getattr(learner_class, "brings_backbone", False):
        return  # the learner builds its own network: backbone.name is not built
    check_image_size(name, int(cfg.data.image_size))
    if cfg.backbone.weights == "imagenet" and not spec.pretrained:
        raise ConfigError(f"Invalid value for 'backbone.weights': imagenet; backbone '{name}' has no pretrained "
                          "weights. Use backbone.weights=none or a local state-dict file")
    check_family(cfg.learner.name, getattr(learner_class, "backbone_families", None), name)
