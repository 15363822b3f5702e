"""Backbones: torchvision's ResNet family with the classifier removed (outputs pooled features).

`weights` is `imagenet` (torchvision's default ImageNet weights: from the torch hub cache, else
downloaded), `none` (random init, said loudly), a local state-dict file, or an http(s) URL.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn

from nevisbench.errors import ConfigError

__all__ = ["build_backbone", "load_weights"]


def _strip_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}


def load_weights(name: str, weights: str) -> dict[str, torch.Tensor] | None:
    """Return the backbone state dict for `weights`, or None for random initialisation."""
    if weights == "none":
        return None
    if weights == "imagenet":
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    elif weights.startswith(("http://", "https://")):
        url = weights
    else:
        path = Path(os.path.expanduser(weights))
        try:
            return _strip_head(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ConfigError(f"Cannot load backbone.weights='{weights}': {exc}") from None
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(
            f"Cannot download backbone weights for {name} from {url} ({exc}). Offline? Put the file at "
            f"{target}, or pass backbone.weights=/path/to/{name}.pth, or backbone.weights=none to "
            "train from random initialisation."
        ) from None
    except RuntimeError as exc:  # hash mismatch or a file that is not a state dict
        raise ConfigError(f"Backbone weights from {url} are invalid: {exc}") from None
    return _strip_head(state)


def build_backbone(name: str, weights: str) -> tuple[nn.Module, int]:
    """Build `name` with `weights`; return (feature extractor, feature dimension)."""
    model = torchvision.models.get_model(name, weights=None)
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    state = load_weights(name, weights)
    if state is not None:
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
            raise ConfigError(f"backbone.weights='{weights}' do not fit {name}: {first}") from None
        if missing or unexpected:
            raise ConfigError(
                f"backbone.weights='{weights}' do not fit {name}: missing {sorted(missing)[:3]}..., "
                f"unexpected {sorted(unexpected)[:3]}..."
            )
    return model, feature_dim
