"""What a training step of the configured backbone needs in memory, estimated without materialising
it (the backbone built on the `meta` device, one forward pass there: shapes only, no data), so
`nevisbench flops` refuses in one line a size the machine cannot hold instead of swapping for minutes
(`backbone.name=vit_l_16 data.image_size=1024` passed 9 GB in three minutes).

The estimate: 4 bytes per parameter four times (weights, gradients, two optimiser states) plus
twice the bytes of every tensor the forward pass creates (kept for the backward pass, and their
gradients). It is an upper bound of a plain CPU step; it leaves out what a learner adds around the
backbone, which is small next to it."""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nevisbench.errors import ConfigError

__all__ = ["available_memory", "training_bytes", "check_fits"]


class _CreatedBytes(TorchDispatchMode):
    """Sums the bytes of the tensors each (non-view) op creates."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            self.total += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def available_memory() -> int | None:
    """Bytes this process may still take: the OS's available memory, under a cgroup limit if any."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as a, open(usage, encoding="ascii") as b:
                found.append(int(a.read().strip()) - int(b.read().strip()))
        except (OSError, ValueError):  # no cgroup limit ("max"), or another layout
            continue
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return max(0, min(found)) if found else None


def training_bytes(name: str, image_size: int, batch_size: int) -> tuple[int, int] | None:
    """(parameter bytes, forward bytes) of a training step of registry backbone `name`; None when
    the backbone cannot be traced on the meta device (then nothing is refused)."""
    from nevisbench.backbones import create_backbone

    try:
        with torch.device("meta"):
            model, _ = create_backbone(name, image_size=image_size)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        x = torch.empty(batch_size, 3, image_size, image_size, device="meta")
        with _CreatedBytes() as created:
            model.train()(x)
    except Exception:  # an op without a meta kernel: no estimate, no refusal
        return None
    return params, created.total


def check_fits(cfg: DictConfig, *, batch_size: int, available: int | None = None) -> None:
    """Refuse in one line a training step of `cfg`'s backbone that cannot fit this machine's memory."""
    estimate = training_bytes(str(cfg.backbone.name), int(cfg.data.image_size), batch_size)
    available = available_memory() if available is None else available
    if estimate is None or available is None:
        return
    params, forward = estimate
    need = 4 * params + 2 * forward
    if need > available:
        gb = 1e9
        raise ConfigError(f"backbone.name={cfg.backbone.name} at data.image_size={cfg.data.image_size} needs about "
                          f"{need / gb:.1f} GB for one training step of {batch_size} images (parameters "
                          f"{params / gb:.1f} GB, activations {forward / gb:.1f} GB), but this machine has "
                          f"{available / gb:.1f} GB available; choose a smaller data.image_size or backbone")
