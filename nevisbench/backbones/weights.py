"""Backbone weights: `imagenet` (torchvision's default ImageNet weights: from the torch hub cache,
else downloaded), `none` (random init, said loudly), a local state-dict file, or an http(s) URL.

Downloads look in the cache first and fail in seconds without a network (`nevisbench.io.net`). A URL's
file is cached under the whole URL (`<hub>/checkpoints/by-url/<sha256 of the URL>/<file name>`), so
two URLs ending in the same file name never share a file; torchvision's own `imagenet` files keep
torchvision's cache path (`<hub>/checkpoints/<file name>`, where an offline machine can put them).
Where the file name carries a content hash, as torch hub names do (`name-<sha256 prefix>.pth`), the
download is checked against it.

The classifier's tensors are dropped (the registry replaced it with `nn.Identity`), and a ViT's
position embeddings are interpolated to the run's image size (torchvision's `interpolate_embeddings`).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch
import torchvision
from torch import nn

from nevisbench.backbones.registry import backbone_spec
from nevisbench.errors import ConfigError
from nevisbench.io import net

__all__ = ["load_weights", "load_into", "cached_path"]

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch hub's naming: resnet18-f37072fd.pth (sha256 prefix)


def _reason(exc: BaseException) -> str:
    """The first line of a load error, without torch's advice to load with weights_only=False
    (never safe for a file from elsewhere)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "weights_only" not in line and "WeightsUnpickler" not in line
              and not line.startswith(("(1)", "(2)", "Please file", "Check the documentation"))]
    return (useful or lines or [type(exc).__name__])[0][:200] or type(exc).__name__


def _strip_head(state: object, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict (optionally under 'state_dict', 'module.'-prefixed)."""
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                            for k, v in state.items()):
        raise ConfigError(f"backbone.weights='{source}' is not a state dict of tensors "
                          "(a file written by torch.save(model.state_dict()))")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_removed_head(model: nn.Module, key: str) -> bool:
    """Whether `key` (e.g. 'fc.weight', 'classifier.3.bias') belongs to a classifier the registry
    replaced with nn.Identity."""
    path = key.rpartition(".")[0]
    try:
        return isinstance(model.get_submodule(path), nn.Identity)
    except AttributeError:
        return False


def _fit_positions(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ViT's position embeddings, interpolated from the weights' image size to the model's."""
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    key = "encoder.pos_embedding"
    if isinstance(model, VisionTransformer) and key in state and state[key].shape != model.encoder.pos_embedding.shape:
        state = dict(interpolate_embeddings(model.image_size, model.patch_size, state))
    return state


def load_weights(name: str, weights: str) -> dict[str, torch.Tensor] | None:
    """Return the backbone state dict for `weights`, or None for random initialisation."""
    if weights == "none":
        return None
    if weights == "imagenet":
        if not backbone_spec(name).pretrained:
            raise ConfigError(f"Invalid value for 'backbone.weights': imagenet; backbone '{name}' has no pretrained "
                              "weights. Use backbone.weights=none or a local state-dict file")
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    elif weights.startswith(("http://", "https://")):
        url = weights
    else:
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise ConfigError(f"Cannot load backbone.weights='{weights}': no such file. Valid: imagenet, none, "
                              "a local state-dict file, or an http(s) URL")
        if path.stat().st_size == 0:
            raise ConfigError(f"Cannot load backbone.weights='{weights}': the file is empty")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"Cannot load backbone.weights='{weights}': not a readable PyTorch state dict "
                              f"({_reason(exc)})") from None
        return _strip_head(state, weights)
    target = cached_path(url, official=weights == "imagenet")
    if not target.is_file():  # the cache first: no network at all when the file is there
        _download(url, target, name)
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that is not a (safe) state dict
        target.unlink(missing_ok=True)  # never leave a bad file in the cache for later offline runs
        raise ConfigError(f"Backbone weights from {url} are invalid: {_reason(exc)}") from None
    try:
        return _strip_head(state, url)
    except ConfigError:
        target.unlink(missing_ok=True)
        raise


def cached_path(url: str, *, official: bool = False) -> Path:
    """Where the file of `url` is cached: keyed by the whole URL; torchvision's own files (`official`)
    where torchvision caches them."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "weights.pth"
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if official:
        return checkpoints / name
    return checkpoints / "by-url" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / name


def _download(url: str, target: Path, name: str) -> None:
    """Fetch `url` into `target` (through a temporary file, checked against a hash its name carries)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    digest = hashlib.sha256()
    try:
        with net.fail_fast():
            request = urllib.request.Request(url, headers={"User-Agent": "nevisbench"})
            with urllib.request.urlopen(request, timeout=net.timeout()) as response, open(part, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # offline, refused, timed out, HTTP errors
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"Cannot download backbone weights for {name} from {url} ({reason}). Offline? Put the file at "
            f"{target}, or pass backbone.weights=/path/to/{name}.pth, or backbone.weights=none to "
            "train from random initialisation."
        ) from None
    expected = HASH_IN_NAME.search(target.name)
    if expected and not digest.hexdigest().startswith(expected.group(1)):
        part.unlink(missing_ok=True)
        raise ConfigError(f"Backbone weights from {url} are invalid: their sha256 starts {digest.hexdigest()[:12]}, "
                          f"but the file name says {expected.group(1)} (a damaged or substituted download)")
    os.replace(part, target)


def load_into(model: nn.Module, name: str, weights: str) -> None:
    """Load `weights` into the registry-built `model` (backbone `name`); a mismatch is one line."""
    state = load_weights(name, weights)
    if state is None:
        return
    state = _fit_positions(model, {k: v for k, v in state.items() if not _is_removed_head(model, k)})
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
