"""Harness overhead: nevisbench's training throughput over a task divided by a minimal
hand-written PyTorch loop's, same model, optimizer, batch, precision and steps.

nevisbench runs the real task path (`nevisbench.run.runner.StreamRunner.run_task`): Lightning Trainer, FLOP meter,
logging, progress bar; anytime evaluation off (`budget.milestones=0`), augmentation off (data cost
is measured by data_pipeline.py). Its throughput is images / training seconds as the run reports
them (fit time, including Lightning's start-up). The reference loop trains on normalised batches
already on the device. Pairs run in ABBA order (which side goes first alternates, so drift in machine speed
cancels); the ratio printed last is the median over pairs. Goal: >= 0.97 on CPU (ResNet18, 64x64, batch 64), >= 0.95 on a GPU
(ResNet50, 64x64, batch 256, bf16).

    python benchmarks/harness_overhead.py                 # picks CUDA when present, else CPU
    python benchmarks/harness_overhead.py --tiny          # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_ratio, model, pick_device, premade_batches, quiet, reference_loop, synthetic_split  # noqa: E402
from rich.console import Console  # noqa: E402

from nevisbench.api.learner import LearnerContext  # noqa: E402
from nevisbench.config import compose  # noqa: E402
from nevisbench.learners.finetune import FinetuneConfig, FinetuneLearner  # noqa: E402
from nevisbench.run.runner import StreamRunner, resolve_precision  # noqa: E402
from nevisbench.run.store.results import ResultsStore  # noqa: E402
from nevisbench.tasks.catalog import TaskSpec  # noqa: E402
from nevisbench.tasks.loader import TaskData  # noqa: E402

NUM_CLASSES = 10


def nevisbench_images_per_second(cfg, split, out: Path) -> float:
    data = TaskData(key="bench", num_classes=NUM_CLASSES, train=split, dev=split, test=split)
    spec = TaskSpec("bench", "bench", "object", NUM_CLASSES, lambda **_: data)
    backbone = model(cfg.backbone.name, NUM_CLASSES)
    width = backbone.fc.in_features
    backbone.fc = torch.nn.Identity()
    learner = FinetuneLearner(FinetuneConfig(), LearnerContext(scenario="transfer", seed=0, image_size=cfg.data.image_size,
                                                               train=cfg.train, feature_dim=width))
    store = ResultsStore(out)
    store.write_config(OmegaConf.to_yaml(cfg))  # what a run folder holds (its state is checked against it)
    runner = StreamRunner(cfg, backbone=backbone, feature_dim=width, store=store, console=Console(quiet=True), learner=learner)
    result = runner.run_task(spec, 0)
    return result["throughput"]["train_images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: 60 CPU, 200 GPU)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--model", default=None, help="default: resnet18 on CPU, resnet50 on GPU")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 256 on GPU")
    parser.add_argument("--tiny", action="store_true", help="3 steps, 1 pair, 16px, batch 8: a smoke test")
    args = parser.parse_args()
    quiet()
    device = pick_device()
    gpu = device.type == "cuda"
    args.model = args.model or ("resnet50" if gpu else "resnet18")
    args.batch_size = args.batch_size or (256 if gpu else 64)
    args.steps = args.steps or (200 if gpu else 60)  # short runs overweight start-of-fit work
    if args.tiny:
        args.steps, args.pairs, args.image_size, args.batch_size = 3, 1, 16, 8
    out = Path(tempfile.mkdtemp(prefix="nevisbench-bench-"))
    cfg = compose([f"backbone.name={args.model}", "backbone.weights=none", f"data.image_size={args.image_size}",
                   f"data.batch_size={args.batch_size}", f"data.eval_batch_size={args.batch_size}", "data.augment=false",
                   f"train.max_steps={args.steps}", "budget.milestones=0", f"out_dir={out}"])
    precision = resolve_precision(cfg)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    channels_last = gpu
    split = synthetic_split(args.batch_size * 8, args.image_size, NUM_CLASSES)
    batches = premade_batches(split, args.batch_size, args.image_size, device, channels_last=channels_last)

    def run_harness() -> float:
        L.seed_everything(0, verbose=False)
        return nevisbench_images_per_second(cfg, split, out)

    def run_reference() -> float:
        L.seed_everything(0, verbose=False)
        net = model(args.model, NUM_CLASSES).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        seconds = reference_loop(net, batches, args.steps, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                 weight_decay=cfg.train.weight_decay, autocast=autocast, device=device)
        return args.steps * args.batch_size / seconds

    if not args.tiny:  # warm both paths up (allocator, kernels); not counted
        run_harness(), run_reference()
    ratios = []
    for pair in range(args.pairs):
        # ABBA: alternate which side runs first, so drift in machine speed cancels
        if pair % 2 == 0:
            harness, reference = run_harness(), run_reference()
        else:
            reference, harness = run_reference(), run_harness()
        ratios.append(harness / reference)
        print(f"pair {pair + 1}: nevisbench {harness:.1f} img/s, reference loop {reference:.1f} img/s, ratio {ratios[-1]:.4f}", flush=True)
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}, {args.model} {args.image_size}px batch {args.batch_size}, "
          f"{precision}, {args.steps} steps")
    print(f"harness throughput ratio (median, nevisbench / hand-written loop): {median_ratio(ratios):.4f}")


if __name__ == "__main__":
    main()
