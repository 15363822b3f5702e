"""The run's backbone: built from the registry (`backbone.name`, `backbone.weights`) at the run's
image size, or left to a learner that brings its own (`Learner.brings_backbone`); and the record of
the architecture that actually ran, which results, `nevisbench flops` and figures name.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.backbones import REGISTRY_TAG, create_backbone, load_into
from nevisbench.backbones.checks import check_backbone
from nevisbench.config.search_space import searches_learner
from nevisbench.errors import ConfigError, PluginError
from nevisbench.registry import get_learner_class

__all__ = ["build_backbone", "start_backbone", "describe_backbone"]


def build_backbone(name: str, weights: str, *, image_size: int) -> tuple[nn.Module, int]:
    """Build registry backbone `name` for `image_size` images with `weights`; return (module, feature_dim)."""
    model, feature_dim = create_backbone(name, image_size=image_size)
    load_into(model, name, weights)
    return model, feature_dim


def start_backbone(cfg: DictConfig) -> tuple[nn.Module | None, int | None]:
    """The backbone the configured learner's `prepare()` receives, and its feature width; (None,
    None) when the learner brings its own. A backbone the learner's rules do not apply to is refused
    here too (the config check already did, for composed configs), before anything is written."""
    learner_class = get_learner_class(cfg.learner.name)
    check_backbone(cfg, learner_class)
    if getattr(learner_class, "brings_backbone", False):
        if searches_learner(cfg):  # each trial would re-prepare a copy of the run's (absent) starting backbone
            raise ConfigError(f"learner '{cfg.learner.name}' brings its own backbone, and a search over learner.* keys "
                              "is not supported for it yet; search train.* keys only")
        return None, None
    return build_backbone(cfg.backbone.name, cfg.backbone.weights, image_size=cfg.data.image_size)


def _shares_modules(a: nn.Module, b: nn.Module) -> bool:
    ids = {id(m) for m in a.modules()}
    return any(id(m) in ids for m in b.modules())


def describe_backbone(learner: Learner, start: nn.Module | None, prepared: Any) -> dict[str, Any]:
    """{name, arch, params, source} of the network `prepare()` returned; checks it is a module and
    that the learner knows its feature width.

    `source` is `config` when the network is (built from) the run's `backbone.name` (pruned,
    truncated or wrapped), else `learner`. `name` is the registry name of the network, or of the
    registry network inside a learner's wrapper, else the class name of the learner's network (a
    learner's own network: its declared `backbone_name` first);
    `arch` is that network's class; `params` counts the parameters of what `prepare()` returned."""
    learner_name = learner.config.name
    if not isinstance(prepared, nn.Module):
        raise PluginError(f"Learner '{learner_name}': prepare() returned {type(prepared).__name__}, not a torch nn.Module")
    dim = learner.feature_dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise PluginError(f"Learner '{learner_name}': feature_dim is {dim!r} after prepare(); a learner that brings "
                          "its own backbone sets self.feature_dim (the width of its pooled features) in prepare()")
    tagged = next((m for m in prepared.modules() if getattr(m, REGISTRY_TAG, None)), None)
    if tagged is None and start is not None and _shares_modules(start, prepared):
        tagged = start  # e.g. a truncated ResNet: the run's backbone's parts in a new container
    from_config = start is not None and (tagged is start or (tagged is None and prepared is start))
    network = tagged if tagged is not None else prepared
    declared = None if from_config else getattr(learner, "backbone_name", None)  # the learner's own network's name
    return {
        "name": declared or getattr(network, REGISTRY_TAG, None) or type(network).__name__,
        "arch": type(network).__name__,
        "params": sum(p.numel() for p in prepared.parameters()),
        "source": "config" if from_config else "learner",
    }
