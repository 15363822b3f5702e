"""The README's demo claim: `nevisbench run learner=finetune` (four offline tasks) runs in under
two minutes on 2 CPU cores. Runs the demo command as a user would (a fresh process) and prints
its wall time, the training seconds its results report, the same number of steps of a plain
PyTorch loop (ResNet18, the demo's 32 px and batch 64: what the compute alone costs), and the
wall time's ratio to 120 s. Take the figure on an IDLE machine: on a shared one it measures the
other users.

    python benchmarks/demo_wall_time.py            # the README's command
    python benchmarks/demo_wall_time.py --tiny     # one task, 2 steps: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLAIM_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="nevisbench-demo-"))
    extra = ["stream.tasks=[digits]", "train.max_steps=2", "data.image_size=16"] if args.tiny else []
    command = [sys.executable, "-m", "nevisbench", "run", "learner=finetune", f"out_dir={out}", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the demo failed:\n{proc.stderr[-2000:]}")
    (results,) = out.glob("*/results.jsonl")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    train = sum(line["flops"]["seconds"]["train"] for line in lines)
    print(f"demo: {len(lines)} tasks, wall {wall:.1f} s (process start to exit), training {train:.1f} s, "
          f"cpu threads {os.cpu_count()}; take it on an idle machine")
    if not args.tiny:
        steps = sum(int(line["steps"]) for line in lines)
        plain = plain_step_seconds() * steps
        print(f"plain PyTorch loop, {steps} steps of the same shapes: {plain:.1f} s; "
              f"harness training / plain loop: {train / plain:.3f}")
    print(f"demo wall-time ratio to the README's {CLAIM_SECONDS:.0f} s: {wall / CLAIM_SECONDS:.4f}")


def plain_step_seconds(warmup: int = 3, steps: int = 10) -> float:
    """Seconds per SGD step of torchvision's ResNet18 (10 classes) on 64 images of 32 px, fp32."""
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


if __name__ == "__main__":
    main()
