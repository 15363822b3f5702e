"""`nevisbench compare` at paper scale: N generated run folders (a sweep's runs/: learners x
settings x budgets x seeds, 4 tasks each with anytime records, a full config.yaml), timed stage by
stage (reader, labeller, table, figure) in process, then the whole command as a user runs it
(`nevisbench compare DIR --csv --out fig.png`, a fresh process). Goals (issue 22): 1,000 runs in
under 5 s, 10,000 in under 60 s. The last line is the 1,000-run command's time / its 5 s goal.

    python benchmarks/compare_scale.py                 # 100, 1,000, 10,000 runs
    python benchmarks/compare_scale.py --sizes 1000    # --tiny: 20 runs (the test suite's check)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LEARNERS = [("finetune", {}), ("conv_prune", {"sparsity": 0.5}), ("conv_prune", {"sparsity": 0.75}),
            ("weight_prune", {"sparsity": 0.9}), ("ft_head", {})]
TASKS = [("shapes", "object"), ("digits", "ocr"), ("faces", "face"), ("textures", "texture")]
GOALS = {1_000: 5.0, 10_000: 60.0}


def _summary(learner: str, settings: dict, budget: float, seed: int, error: float) -> dict:
    tasks = []
    for i, (task, domain) in enumerate(TASKS):
        train = budget * (1 - settings.get("sparsity", 0.0))
        anytime = [{"train_flops": train * f, "train_flops_executed": budget * f, "train_seconds": 10 * f,
                    "dev_error": min(1.0, error + 0.3 * (1 - f)), "fraction": f} for f in (0.01, 0.05, 0.2, 1.0)]
        tasks.append({"task": task, "index": i, "status": "ok", "domain": domain, "num_classes": 10,
                      "test_error": error, "flops": {"train": train, "search": 0.0, "executed": {"train": budget,
                      "search": 0.0}, "seconds": {"train": 10.0, "search": 0.0}}, "anytime": anytime})
    total = budget * len(TASKS) * (1 - settings.get("sparsity", 0.0))
    point = {"flops": total, "flops_executed": budget * len(TASKS), "seconds": 40.0, "error": error,
             "includes_search": True}
    return {"learner": learner, "learner_config": {"name": learner, **settings}, "scenario": "transfer",
            "stream": "demo", "seed": seed, "budget": {"flops_per_task": budget, "measure": "algorithmic"},
            "final_mean_error": error, "point": point, "point_without_search": point, "tasks": tasks,
            "anytime_curve": [{"flops": total * f, "flops_executed": budget * 4 * f, "seconds": 40 * f,
                               "mean_error": min(1.0, error + 0.3 * (1 - f))} for f in (0.01, 0.05, 0.2, 1.0)]}


def _config(learner: str, settings: dict, budget: float, seed: int, name: str) -> dict:
    return {"seed": seed, "scenario": "transfer", "run_name": name, "out_dir": "runs",
            "learner": {"name": learner, **settings}, "choices": {"learner": learner, "stream": "demo"},
            "stream": {"name": "demo", "tasks": None}, "backbone": {"name": "resnet18", "weights": "none"},
            "data": {"root": "~/nevis-data", "image_size": 32, "batch_size": 64, "augment": True},
            "train": {"max_steps": 1000, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
            "budget": {"flops_per_task": budget, "measure": "algorithmic", "milestones": 4},
            "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true"}, "logger": {"name": "local"}}


def generate(root: Path, count: int) -> Path:
    """A sweep-shaped folder with `count` finished runs."""
    runs = root / "runs"
    runs.mkdir(parents=True)
    (root / "jobs.jsonl").write_text("")
    budgets = [1e11 * 2**k for k in range(8)]
    per_seed = len(LEARNERS) * len(budgets)
    for n in range(count):
        learner, settings = LEARNERS[n % len(LEARNERS)]
        budget = budgets[(n // len(LEARNERS)) % len(budgets)]
        seed = n // per_seed
        error = 0.2 + 0.5 / (1 + (n % per_seed)) + 0.001 * (seed % 7)
        folder = runs / f"{n:05d}"
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(_summary(learner, settings, budget, seed, error)))
        (folder / "config.yaml").write_text(yaml.safe_dump(_config(learner, settings, budget, seed, folder.name)))
    return root


def _timed(what: str, times: dict[str, float], call):
    start = time.perf_counter()
    result = call()
    times[what] = time.perf_counter() - start
    return result


def stages(folder: Path, out: Path) -> dict[str, float]:
    """Each stage of `compare`, in this process."""
    from rich.console import Console

    from nevisbench.analysis import compare_rows, label_runs, load_runs, plot_comparison, print_table, render_table, to_csv

    times: dict[str, float] = {}
    runs = _timed("reader", times, lambda: load_runs([folder]))
    _timed("labeller", times, lambda: label_runs(runs))
    console = Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115 (closed with the process)
    _timed("table", times, lambda: (print_table(console, render_table(compare_rows(runs))), to_csv(compare_rows(runs))))
    _timed("figure", times, lambda: plot_comparison(runs, out / "stage.png"))
    return times


def command(folder: Path, out: Path) -> tuple[float, float]:
    """`nevisbench compare DIR --csv --out` as a user runs it: a fresh process, imports included.
    Its wall-clock and CPU seconds (on a shared machine the CPU time is the steadier figure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nevisbench", "compare", str(folder), "--csv", str(out / "t.csv"),
                           "--out", str(out / "fig.png")], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or proc.stderr:
        raise SystemExit(f"compare failed or warned: {proc.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated run counts")
    parser.add_argument("--tiny", action="store_true", help="20 runs only (the test suite's check)")
    args = parser.parse_args()
    sizes = [20] if args.tiny else [int(s) for s in args.sizes.split(",")]
    totals: dict[int, float] = {}
    print(f"{'runs':>6} {'generate':>9} {'reader':>8} {'labeller':>9} {'table':>7} {'figure':>7} {'command':>8} "
          f"{'(cpu)':>8}  goal")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            folder = generate(Path(tmp) / "sweep", size)
            made = time.perf_counter() - start
            times = stages(folder, Path(tmp))
            totals[size], cpu = command(folder, Path(tmp))
        goal = GOALS.get(size)
        print(f"{size:>6} {made:>8.2f}s {times['reader']:>7.2f}s {times['labeller']:>8.3f}s {times['table']:>6.2f}s "
              f"{times['figure']:>6.2f}s {totals[size]:>7.2f}s {cpu:>7.2f}s  {f'< {goal:g} s' if goal else '-'}",
              flush=True)
    size = 1_000 if 1_000 in totals else sizes[-1]  # the ratio printed last: the 1,000-run command's, else the last
    goal = GOALS.get(size, GOALS[1_000])
    print(f"compare time ratio ({size} runs, command / {goal:g} s goal): {totals[size] / goal:.3f}")


if __name__ == "__main__":
    main()
