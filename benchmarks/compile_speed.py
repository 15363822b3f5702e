"""`trainer.compile=true` against eager, through the real task path (`StreamRunner.run_task`:
Lightning, FLOP meter with its counted and audited steps, progress bar off): training steps/s of
each over a run long enough to amortise compilation, the compile time (reported apart from the
training time, as a results line's `seconds.compile`), the share of steps that ran compiled (all
but the counted ones), and whether the counted FLOPs are identical. `--repeats` runs of each side
in ABBA order; steps/s are printed as min / median / max.

    python benchmarks/compile_speed.py                     # ResNet18 32px batch 32, 200 steps, CPU (inductor)
    python benchmarks/compile_speed.py --tiny              # aot_eager, 4 steps: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pick_device, quiet, synthetic_split  # noqa: E402
from gpu_suite import NUM_CLASSES, harness_task  # noqa: E402

from nevisbench.config import compose  # noqa: E402
from nevisbench.run.task import compiling  # noqa: E402


def one_run(args, compiled: bool, split, out: Path) -> dict:
    cfg = compose([f"backbone.name={args.model}", "backbone.weights=none", f"data.image_size={args.image_size}",
                   f"data.batch_size={args.batch_size}", f"data.eval_batch_size={args.batch_size}", "data.augment=false",
                   f"train.max_steps={args.steps}", "budget.milestones=0", "trainer.progress_bar=false",
                   f"trainer.compile={str(compiled).lower()}", f"out_dir={out}"])
    start = time.perf_counter()
    line = harness_task(cfg, split, out)
    wall = time.perf_counter() - start
    seconds, stats = line["flops"]["seconds"], line["compile_stats"]
    stepped = stats["compiled_steps"] + stats["eager_steps"]
    return {"steps_per_second": line["steps"] / seconds["train"], "with_compile": line["steps"] / (seconds["train"] + seconds["compile"]),
            "compile_seconds": seconds["compile"], "wall": wall, "share": stats["compiled_steps"] / stepped if stepped else 0.0,
            "eager_steps": stats["eager_steps"], "flops": (line["flops"]["train"], line["flops"]["eval"])}


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", default="inductor", help="Dynamo backend (inductor; aot_eager under --tiny)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    quiet()
    if args.tiny:
        args.steps, args.repeats, args.image_size, args.batch_size, args.backend = 4, 1, 16, 8, "aot_eager"
    compiling.BACKEND = args.backend
    device = pick_device()
    out = Path(tempfile.mkdtemp(prefix="nevisbench-compile-"))
    split = synthetic_split(args.batch_size * 8, args.image_size, NUM_CLASSES)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for compiled in ((False, True) if repeat % 2 == 0 else (True, False)):  # ABBA
            runs[compiled].append(one_run(args, compiled, split, out))
            r = runs[compiled][-1]
            print(f"{'compiled' if compiled else 'eager   '} run {repeat + 1}: {r['steps_per_second']:.3f} steps/s "
                  f"(with compile time: {r['with_compile']:.3f}), compile {r['compile_seconds']:.1f} s, compiled-step share "
                  f"{r['share']:.3f} ({r['eager_steps']} counted steps eager), wall {r['wall']:.1f} s", flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    eager, compiled = runs[False], runs[True]
    same = {r["flops"] for r in eager + compiled}
    print(f"device: {where}, torch {torch.__version__}, {args.model} {args.image_size}px batch {args.batch_size}, "
          f"{args.steps} steps, backend {args.backend}, {args.repeats} repeats")
    print(f"steps/s min / median / max: eager {spread([r['steps_per_second'] for r in eager])}, "
          f"compiled {spread([r['steps_per_second'] for r in compiled])} (compiled incl. compile time "
          f"{spread([r['with_compile'] for r in compiled])})")
    print(f"compile seconds {spread([r['compile_seconds'] for r in compiled])}; compiled-step share "
          f"{spread([r['share'] for r in compiled])}; counted FLOPs identical: {len(same) == 1}")
    ratio = statistics.median(r["steps_per_second"] for r in compiled) / statistics.median(r["steps_per_second"] for r in eager)
    print(f"compiled / eager training steps/s ratio (median): {ratio:.4f}")


if __name__ == "__main__":
    main()
