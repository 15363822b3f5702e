"""Data never the bottleneck: throughput of the full pipeline (cached uint8 task data -> batched
random-resized-crop + flip + normalise on the device -> model step) divided by the model step
alone on tensors already on the device. Same model, optimizer, steps; pairs run in ABBA order;
the ratio printed last is the median. Goal: >= 0.95.

    python benchmarks/data_pipeline.py            # CUDA when present (ResNet50, bf16, batch 256), else CPU (ResNet18, batch 64)
    python benchmarks/data_pipeline.py --tiny     # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_ratio, model, pick_device, premade_batches, quiet, sync, synthetic_split  # noqa: E402

from nevisbench.tasks.loader import BatchLoader  # noqa: E402

NUM_CLASSES = 10


def train(net: nn.Module, batches, steps: int, device: torch.device, autocast: torch.dtype | None) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    iterator = iter(batches())
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(batches())
            x, y = next(iterator)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="default: 20 CPU, 200 GPU")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--stored-size", type=int, default=72, help="size of the cached uint8 images")
    parser.add_argument("--tiny", action="store_true", help="3 steps, 1 pair, 16px: a smoke test")
    args = parser.parse_args()
    quiet()
    device = pick_device()
    gpu = device.type == "cuda"
    name, batch_size = ("resnet50", 256) if gpu else ("resnet18", 64)
    steps = args.steps or (200 if gpu else 20)
    autocast = torch.bfloat16 if gpu else None
    if args.tiny:
        steps, args.pairs, args.image_size, args.stored_size, batch_size = 3, 1, 16, 20, 8
    split = synthetic_split(batch_size * 16, args.stored_size, NUM_CLASSES)
    pipeline = BatchLoader(split, batch_size=batch_size, image_size=args.image_size, train=True, augment=True,
                           device=device, channels_last=gpu)
    ready = premade_batches(synthetic_split(batch_size * 4, args.image_size, NUM_CLASSES), batch_size, args.image_size,
                            device, channels_last=gpu)
    net = model(name, NUM_CLASSES).to(device)
    if gpu:
        net = net.to(memory_format=torch.channels_last)
    train(net, lambda: ready, 2, device, autocast)  # warm-up
    ratios = []
    for pair in range(args.pairs):
        if pair % 2 == 0:  # ABBA order: drift in machine speed cancels
            full = train(net, lambda: pipeline, steps, device, autocast)
            alone = train(net, lambda: ready, steps, device, autocast)
        else:
            alone = train(net, lambda: ready, steps, device, autocast)
            full = train(net, lambda: pipeline, steps, device, autocast)
        ratios.append(alone / full)  # throughput ratio = time ratio inverted
        print(f"pair {pair + 1}: full pipeline {steps * batch_size / full:.1f} img/s, model step alone "
              f"{steps * batch_size / alone:.1f} img/s, ratio {ratios[-1]:.4f}", flush=True)
    where = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {where}, torch {torch.__version__}, {name} {args.image_size}px (stored {args.stored_size}px) "
          f"batch {batch_size}, {'bf16' if gpu else 'fp32'}, {steps} steps")
    print(f"data pipeline throughput ratio (median, full pipeline / model step alone): {median_ratio(ratios):.4f}")


if __name__ == "__main__":
    main()
