"""Overhead of the FLOP meter: a 200-step CPU training run with the meter vs without it.

Both runs use the same Lightning Trainer, module, data and seed; only FlopMeterCallback differs.
Pairs run in ABBA order (which side goes first alternates) so drift in machine speed cancels.
The ratio printed last is the median of the pair ratios (goal: below 1.01); the spread of pair
ratios and run times is printed too, since run-to-run noise on a shared 2-core machine is ~10%.

    python benchmarks/flop_meter_overhead.py            # ResNet18, 32x32, batch 16, 200 steps, 6 pairs
    python benchmarks/flop_meter_overhead.py --tiny     # seconds; used by the tests so it cannot rot
    python benchmarks/flop_meter_overhead.py --audit-every 1   # meter.count=every_step (third-party plugins)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torchvision
from torch import nn

from nevisbench.api.learner import TaskInfo
from nevisbench.api.module import TaskModule
from nevisbench.compute.flops import FlopMeter
from nevisbench.config import compose
from nevisbench.run.task.callbacks import FlopMeterCallback
from nevisbench.tasks.loader import BatchLoader, Split


def _fit(*, with_meter: bool, steps: int, model: str, image_size: int, batch_size: int,
         audit_every: int = 32) -> tuple[float, FlopMeter]:
    L.seed_everything(0, verbose=False)
    backbone = torchvision.models.get_model(model)
    width = backbone.fc.in_features
    backbone.fc = nn.Identity()
    module = TaskModule(backbone, nn.Linear(width, 10), task=TaskInfo("bench", "bench", 0, "object", 10), train=compose([]).train)
    n = batch_size * 4
    data = Split(torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8), torch.arange(n) % 10)
    loader = BatchLoader(data, batch_size=batch_size, image_size=image_size, train=True, augment=False)
    meter = FlopMeter(audit_every=audit_every)
    meter.start_task()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps, max_epochs=-1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[FlopMeterCallback(meter)] if with_meter else [])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return time.perf_counter() - start, meter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--audit-every", type=int, default=32, help="1: count every step (meter.count=every_step)")
    parser.add_argument("--tiny", action="store_true", help="3 steps, 1 pair, 16px: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.pairs, args.image_size, args.batch_size = 3, 1, 16, 4
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    settings = dict(steps=args.steps, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
                    audit_every=args.audit_every)
    _fit(with_meter=True, **{**settings, "steps": 2})  # warm-up (allocator, kernels)
    ratios, with_times, without_times = [], [], []
    for pair in range(args.pairs):
        if pair % 2 == 0:  # ABBA order: drift in machine speed cancels
            with_meter, meter = _fit(with_meter=True, **settings)
            without, _ = _fit(with_meter=False, **settings)
        else:
            without, _ = _fit(with_meter=False, **settings)
            with_meter, meter = _fit(with_meter=True, **settings)
        ratios.append(with_meter / without)
        with_times.append(with_meter)
        without_times.append(without)
        print(f"pair {pair + 1}: with meter {with_meter:.2f} s, without {without:.2f} s, ratio {ratios[-1]:.4f}", flush=True)
    print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}, {args.model} "
          f"{args.image_size}px batch {args.batch_size}, {args.steps} steps; counted {meter.task.train:.4g} training FLOPs")
    print(f"pair ratios range {min(ratios):.4f}..{max(ratios):.4f}; run times with {min(with_times):.1f}..{max(with_times):.1f} s, "
          f"without {min(without_times):.1f}..{max(without_times):.1f} s")
    print(f"flop meter overhead ratio (median of ABBA pairs, with/without): {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
