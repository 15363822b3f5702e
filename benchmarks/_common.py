"""Shared pieces of the benchmarks: a synthetic in-memory task and a minimal reference loop."""

from __future__ import annotations

import logging
import math
import statistics
import warnings

import torch
import torchvision
from torch import nn

from nevisbench.tasks.loader import BatchLoader, Split


def quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def synthetic_split(n: int, image_size: int, num_classes: int, *, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    return Split(images, torch.arange(n) % num_classes)


def model(name: str, num_classes: int) -> nn.Module:
    net = torchvision.models.get_model(name)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def reference_loop(net: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, *,
                   lr: float, momentum: float, weight_decay: float, autocast: torch.dtype | None, device: torch.device) -> float:
    """A minimal hand-written training loop (SGD + cosine, like nevisbench's defaults); returns seconds."""
    import time

    net.train()
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, **fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    loss_fn = nn.CrossEntropyLoss()
    sync(device)
    start = time.perf_counter()
    for step in range(steps):
        x, y = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def premade_batches(split: Split, batch_size: int, image_size: int, device: torch.device, *, channels_last: bool) -> list:
    """Normalised float batches already on the device (no augmentation): the reference's data."""
    loader = BatchLoader(split, batch_size=batch_size, image_size=image_size, train=False, device=device, channels_last=channels_last)
    return [(x.clone(), y.clone()) for x, y in loader]


def median_ratio(ratios: list[float]) -> float:
    return statistics.median(ratios)
