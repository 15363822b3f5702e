"""Training-step time of every learner (at sparsity 0.5 where it applies) relative to dense
`finetune`, measured side by side: ResNet50, 64x64, batch 32 (CPU by default; CUDA when present,
bf16). Learners are timed round-robin for `--rounds` rounds; each entry is the median step time over
its timed steps. The last line prints the ratio table's key figure (conv_prune grouped vs dense).

    python benchmarks/learner_step_time.py
    python benchmarks/learner_step_time.py --tiny        # resnet18 at 16px, 1 step: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pick_device, quiet, sync  # noqa: E402

from nevisbench.api.learner import LearnerContext, TaskInfo  # noqa: E402
from nevisbench.config import compose  # noqa: E402
from nevisbench.registry import get_learner_class  # noqa: E402
from nevisbench.run.learner.backbone import build_backbone  # noqa: E402

LEARNERS = [
    ("finetune", []),
    ("weight_prune", ["learner.sparsity=0.5"]),
    ("conv_prune", ["learner.sparsity=0.5"]),
    ("conv_prune", ["learner.sparsity=0.5", "learner.impl=grouped"]),
    ("channel_prune", ["learner.sparsity=0.5"]),
    ("ft_block_1to3", []),
    ("ft_block_3to3", []),
    ("ft_head", []),
    ("block_0to1_ft_all", []),
    ("block_0to2_ft_all", []),
    ("adp1x1", []),
]


def build(option: str, overrides: list[str], backbone_name: str, image_size: int, device: torch.device):
    cfg = compose([f"learner={option}", *overrides, f"backbone.name={backbone_name}", f"data.image_size={image_size}"])
    backbone, width = build_backbone(cfg.backbone.name, "none", image_size=image_size)
    learner = get_learner_class(cfg.learner.name)(
        OmegaConf.to_object(cfg.learner), LearnerContext("transfer", 0, image_size, cfg.train, width))
    module = learner.begin_task(TaskInfo("bench", "bench", 0, "object", 10), learner.prepare(backbone)).to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    return module, torch.optim.SGD(params, lr=0.01, momentum=0.9)


def step(module, optimizer, x, y, autocast) -> None:
    with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        loss = torch.nn.functional.cross_entropy(module(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per learner per round")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    quiet()
    device = pick_device()
    autocast = torch.bfloat16 if device.type == "cuda" else None
    name, size, batch = ("resnet18", 16, 4) if args.tiny else ("resnet50", 64, 32)
    if args.tiny:
        args.rounds, args.steps = 1, 1
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % 10
    built = {}
    for option, overrides in LEARNERS:
        label = option + (" (grouped)" if "learner.impl=grouped" in overrides else "")
        built[label] = build(option, overrides, name, size, device)
        step(*built[label], x, y, autocast)  # warm-up
    times: dict[str, list[float]] = {label: [] for label in built}
    for _ in range(args.rounds):
        for label, (module, optimizer) in built.items():
            for _ in range(args.steps):
                sync(device)
                start = time.perf_counter()
                step(module, optimizer, x, y, autocast)
                sync(device)
                times[label].append(time.perf_counter() - start)
    dense = statistics.median(times["finetune"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {where}, torch {torch.__version__}, {name} {size}x{size} batch {batch}, "
          f"{'bf16' if autocast else 'fp32'}, median of {args.rounds * args.steps} steps")
    print(f"{'learner':<26} {'step (ms)':>10} {'ratio to finetune':>18}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:<26} {1000 * median:>10.1f} {median / dense:>18.3f}")
    grouped = statistics.median(times["conv_prune (grouped)"])
    print(f"conv_prune grouped step-time ratio to finetune: {grouped / dense:.4f}")


if __name__ == "__main__":
    main()
