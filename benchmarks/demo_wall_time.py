"""The README's demo claim: `nevisbench run learner=finetune` (four offline tasks) trains in
under a minute on 2 CPU cores. Runs the demo command as a user would (a fresh process) and
prints its wall time, the training seconds its results report, and their ratio to 60 s.
Take the figure on an IDLE machine: on a shared one it measures the other users.

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

CLAIM_SECONDS = 60.0


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
    print(f"demo wall-time ratio to the README's {CLAIM_SECONDS:.0f} s: {wall / CLAIM_SECONDS:.4f}")


if __name__ == "__main__":
    main()
