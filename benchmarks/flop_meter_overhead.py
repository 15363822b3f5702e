"""Overhead of the FLOP meter: a CPU training run with the meter vs without it.

Both runs use the same Lightning Trainer, module, data and seed; only FlopMeterCallback differs.
Pairs run in ABBA order (which side goes first alternates) so drift in machine speed cancels.
The ratio printed last is the median of the pair ratios; the spread of pair ratios and run times
is printed too, since run-to-run noise on a shared 2-core machine is ~10% or more.

Two settings:
- default: the meter as the learners nevisbench ships run it (`meter.count=cached`: one counted
  step per structure, audited every 32nd), whole-run time (goal: below 1.01);
- `--plugin`: a third-party plugin, counted every step (`meter.count=every_step`: every op through
  the meter's engine, `--engine`: native by default where it builds), against the same run uncounted, for ResNet18 32 px batch 16 and
  ResNet50 64 px batch 32 (goal: at most 1.05). The time compared is the steady state: from the
  start of step `--skip` to the end of training (the first steps, and the prologue the meter
  counts, are start-up work of both runs). Process CPU time is compared too: on a shared machine
  it varies less than wall time.

    python benchmarks/flop_meter_overhead.py            # ResNet18, 32x32, batch 16, 200 steps, 6 pairs
    python benchmarks/flop_meter_overhead.py --plugin   # every_step, both models (~8 minutes on 2 cores)
    python benchmarks/flop_meter_overhead.py --plugin --engine python   # the same, counted by the Python mode
    python benchmarks/flop_meter_overhead.py --tiny     # seconds; used by the tests so it cannot rot
    python benchmarks/flop_meter_overhead.py --tiny --plugin
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from dataclasses import dataclass

import lightning as L
import torch
import torchvision
from torch import nn

from nevisbench.api.learner import TaskInfo
from nevisbench.api.module import TaskModule
from nevisbench.compute import guard, native
from nevisbench.compute.counter import set_engine
from nevisbench.compute.flops import FlopMeter, StepCounter, arm_threads, structure_signature
from nevisbench.config import compose
from nevisbench.run.task.callbacks import FlopMeterCallback
from nevisbench.tasks.loader import BatchLoader, Split

# (model, image size, batch size, steps, steps skipped before the clock starts, interleaved steps) of `--plugin`
PLUGIN_SETTINGS = (("resnet18", 32, 16, 60, 5, 80), ("resnet50", 64, 32, 12, 2, 16))
PLUGIN_GOAL = 1.05


@dataclass
class Run:
    wall: float  # seconds, the whole fit
    steady: float  # seconds from the start of step `skip` to the end of training
    cpu: float  # process CPU seconds over the same steps
    meter: FlopMeter


class _Clock(L.Callback):
    """Starts the steady-state clocks at the start of step `skip`, stops them at the end of training."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.cpu_start, self.steady, self.cpu = skip, 0.0, 0.0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.skip:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_end(self, trainer, pl_module) -> None:
        self.steady, self.cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start


def _fit(*, with_meter: bool, steps: int, model: str, image_size: int, batch_size: int,
         audit_every: int = 32, skip: int = 0) -> Run:
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
    clock = _Clock(skip)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps, max_epochs=-1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[FlopMeterCallback(meter), clock] if with_meter else [clock])  # the meter's must be first
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return Run(time.perf_counter() - start, clock.steady, clock.cpu, meter)


def _pairs(settings: dict, pairs: int, key: str) -> tuple[list[float], list[float], list[tuple[Run, Run]]]:
    """ABBA pairs of (metered, unmetered) runs: the ratios of `key` (wall or steady) and of CPU time."""
    _fit(with_meter=True, **{**settings, "steps": 2, "skip": 0})  # warm-up (allocator, kernels)
    ratios, cpu_ratios, runs = [], [], []
    for pair in range(pairs):
        if pair % 2 == 0:  # ABBA order: drift in machine speed cancels
            metered = _fit(with_meter=True, **settings)
            plain = _fit(with_meter=False, **settings)
        else:
            plain = _fit(with_meter=False, **settings)
            metered = _fit(with_meter=True, **settings)
        ratios.append(getattr(metered, key) / getattr(plain, key))
        cpu_ratios.append(metered.cpu / plain.cpu)
        runs.append((metered, plain))
        print(f"  pair {pair + 1}: with meter {getattr(metered, key):.2f} s, without {getattr(plain, key):.2f} s, "
              f"ratio {ratios[-1]:.4f} (CPU time {cpu_ratios[-1]:.4f})", flush=True)
    return ratios, cpu_ratios, runs


def interleaved(model: str, size: int, batch: int, steps: int) -> list[float]:
    """Counted / uncounted step time, alternating step by step in one process (thread CPU time): the
    meter's per-step work as FlopMeterCallback does it (its guard checks, the structure signature, a
    charging window with threads), without Lightning. Adjacent steps share the machine's state of the
    moment, so this varies much less than whole runs on a shared machine."""
    torch.manual_seed(0)
    net = torchvision.models.get_model(model, num_classes=10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, foreach=True)  # as TaskModule's on CPU
    x, y = torch.randn(batch, 3, size, size), torch.arange(batch) % 10
    arm_threads()
    guard.mark_signals()
    guard.mark_threads()

    def plain() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    def counted() -> None:
        guard.check_signals("bench")
        guard.check_threads("bench")
        structure_signature(net, x)
        with StepCounter(net, charging=True, threads=True) as counter:
            plain()
        counter.totals()

    def took(step) -> float:
        start = time.thread_time()
        step()
        return time.thread_time() - start

    plain()  # warm-up
    counted()
    ratios = []
    for i in range(steps):
        first, second = (plain, counted) if i % 2 == 0 else (counted, plain)
        a, b = took(first), took(second)
        ratios.append(b / a if first is plain else a / b)
    return ratios


def _spread(values: list[float]) -> str:
    return f"{min(values):.4f}..{max(values):.4f}"


def plugin_overhead(pairs: int, tiny: bool, models: list[str]) -> list[tuple[str, float, float]]:
    """Every step counted vs uncounted, for each model of PLUGIN_SETTINGS: (label, wall ratio, CPU ratio)."""
    out = []
    for model, size, batch, steps, skip, alternating in (setting for setting in PLUGIN_SETTINGS if setting[0] in models):
        if tiny:
            size, batch, steps, skip, alternating = 16, 4, 4, 1, 2
        label = f"{model} {size}px batch {batch}"
        print(f"{label}, every step counted vs uncounted, {steps} steps (clock from step {skip}), {pairs} pairs", flush=True)
        settings = dict(steps=steps, model=model, image_size=size, batch_size=batch, audit_every=1, skip=skip)
        ratios, cpu_ratios, runs = _pairs(settings, pairs, "steady")
        per_step = [(m.steady / (steps - skip), p.steady / (steps - skip)) for m, p in runs]
        counted = runs[-1][0].meter.task.train
        print(f"  {label}: pair ratios {_spread(ratios)}, CPU-time ratios {_spread(cpu_ratios)}; ms per step with "
              f"{min(m for m, _ in per_step) * 1e3:.0f}..{max(m for m, _ in per_step) * 1e3:.0f}, without "
              f"{min(p for _, p in per_step) * 1e3:.0f}..{max(p for _, p in per_step) * 1e3:.0f}; counted {counted:.4g} FLOPs")
        print(f"  {label}: median ratio {statistics.median(ratios):.4f} (CPU time {statistics.median(cpu_ratios):.4f})", flush=True)
        steps_ratios = sorted(interleaved(model, size, batch, alternating))
        quartiles = statistics.quantiles(steps_ratios, n=4) if len(steps_ratios) > 1 else steps_ratios * 3
        print(f"  {label}: step by step, {alternating} steps alternating (thread CPU time): median {statistics.median(steps_ratios):.4f}, "
              f"quartiles {quartiles[0]:.4f}..{quartiles[2]:.4f}, range {_spread(steps_ratios)}", flush=True)
        out.append((label, statistics.median(ratios), statistics.median(cpu_ratios)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=None, help="default 6")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--audit-every", type=int, default=32, help="1: count every step (meter.count=every_step)")
    parser.add_argument("--plugin", action="store_true",
                        help="a plugin counted every step vs the same run uncounted, ResNet18 32px b16 and ResNet50 64px b32")
    parser.add_argument("--models", default="resnet18,resnet50", help="--plugin: which of its two settings to run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 on a loaded machine, where threads spin-wait on each other")
    parser.add_argument("--tiny", action="store_true", help="a few steps, 1 pair, 16px: a smoke test")
    parser.add_argument("--engine", default="auto", choices=native.ENGINES,
                        help="what counts ops (meter.engine): auto = native for --plugin where it builds, else python")
    args = parser.parse_args()
    pairs = 1 if args.tiny else args.pairs or 6  # single pairs vary +-5% on a shared 2-core VM
    if args.tiny:
        args.steps, args.image_size, args.batch_size = 3, 16, 4
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = native.choose_engine(args.engine, every_step=args.plugin or args.audit_every == 1)
    set_engine(engine)
    print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; meter engine: {engine}", flush=True)
    if args.plugin:
        results = plugin_overhead(pairs, args.tiny, args.models.split(","))
        summary = ", ".join(f"{label} {wall:.4f} (CPU {cpu:.4f})" for label, wall, cpu in results)
        print(f"every_step / uncounted, median of ABBA pairs (goal <= {PLUGIN_GOAL}): {summary}")
        print(f"flop meter every-step overhead ratio (worst model, median of ABBA pairs): {max(w for _, w, _ in results):.4f}")
        return
    settings = dict(steps=args.steps, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
                    audit_every=args.audit_every)
    ratios, _, runs = _pairs(settings, pairs, "wall")
    print(f"{args.model} {args.image_size}px batch {args.batch_size}, {args.steps} steps; "
          f"counted {runs[-1][0].meter.task.train:.4g} training FLOPs")
    print(f"pair ratios range {_spread(ratios)}; run times with {min(m.wall for m, _ in runs):.1f}..{max(m.wall for m, _ in runs):.1f} s, "
          f"without {min(p.wall for _, p in runs):.1f}..{max(p.wall for _, p in runs):.1f} s")
    print(f"flop meter overhead ratio (median of ABBA pairs, with/without): {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
