"""Masks and structure: the sparsity a layer declares (`<param>_mask` buffers, the
`torch.nn.utils.prune` convention), checked to be really applied, and the structure signature a
step's cost is cached under (see `nevisbench.compute.flops`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from nevisbench.errors import PluginError

__all__ = ["masked_params", "check_mask", "mask_densities", "density", "structure_signature", "modules_of", "has_masks"]


def modules_of(root: nn.Module) -> list[nn.Module]:
    """`list(root.modules())` (the same modules, each once, in the same pre-order) without building
    every module's dotted name: the per-step hooks walk the model with it."""
    out: list[nn.Module] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append(module)
        stack.extend(reversed([child for child in module._modules.values() if child is not None]))
    return out


def has_masks(modules: list[nn.Module]) -> bool:
    """Whether any of `modules` has a `<param>_mask` buffer (`masked_params` would find one)."""
    return any(mask is not None and name.endswith("_mask") for module in modules for name, mask in module._buffers.items())


def masked_params(root: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    for name, module in root.named_modules():
        for buffer_name, mask in module._buffers.items():
            if mask is not None and buffer_name.endswith("_mask"):
                yield name, module, buffer_name.removesuffix("_mask"), mask


def check_mask(name: str, module: nn.Module, param_name: str, mask: torch.Tensor) -> torch.Tensor:
    weight = getattr(module, param_name, None)
    if not isinstance(weight, torch.Tensor) or weight.shape != mask.shape:
        raise PluginError(f"Module '{name}' has a mask '{param_name}_mask' that matches no parameter '{param_name}'")
    if bool((weight.detach()[mask == 0] != 0).any()):
        raise PluginError(f"Module '{name}' declares '{param_name}_mask' but its {param_name} is non-zero "
                          "where the mask is zero: the mask must really be applied")
    return weight


def mask_densities(root: nn.Module) -> dict[str, float]:
    """Kept fraction of every masked `weight`, by its module's name in `root` ('' for root itself).

    Raises PluginError when a mask claims zeros the layer's weight does not have.
    """
    densities: dict[str, float] = {}
    for name, module, param_name, mask in masked_params(root):
        check_mask(name, module, param_name, mask)
        if param_name == "weight":  # FLOPs scale with the kept weights; biases are negligible
            densities[name] = density(mask)
    return densities


# mask -> (version, density): a mask's density is recounted only when the mask is modified in
# place (its version counter moves) or replaced (a new tensor)
_DENSITY_CACHE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def density(mask: torch.Tensor) -> float:
    cached = _DENSITY_CACHE.get(mask)
    if cached is not None and cached[0] == mask._version:
        return cached[1]
    kept = float(mask.count_nonzero()) / max(1, mask.numel())
    _DENSITY_CACHE[mask] = (mask._version, kept)
    return kept


def structure_signature(root: nn.Module, x: torch.Tensor, kind: str = "train") -> tuple:
    """What a step's FLOPs depend on, cheap to compute every step (no dispatch, no device sync
    unless a mask changed): the batch's shape and dtype, every parameter's shape, dtype and
    requires_grad, every mask's density, every module's train/eval flag and hook count."""
    flags, params, masks = [], [], []
    hooks = 0
    for module in modules_of(root):
        flags.append(module.training)
        for p in module._parameters.values():
            if p is not None:
                params.append((p.shape, p.dtype, p.requires_grad))
        for buffer_name, buffer in module._buffers.items():
            if buffer is not None and buffer_name.endswith("_mask"):
                masks.append(density(buffer))
        hooks += len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
    return (kind, tuple(x.shape), x.dtype, tuple(flags), tuple(params), tuple(masks), hooks)
