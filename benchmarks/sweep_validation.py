"""Sweep validation time: every job's config checked before anything starts (`validate_jobs`, one
Hydra composition per choice of group options, each job's overrides applied by Hydra to a copy)
for grids of 100 and 1,000 jobs, against composing each job from scratch as `nevisbench run` does
(timed on a sample, per job). Goal: 1,000 jobs in under 10 s on the 2-core development machine.
Wall and CPU seconds are both printed: on a shared machine the wall time includes other users' load.

    python benchmarks/sweep_validation.py           # 100 and 1,000 jobs; the from-scratch sample: 20 jobs
    python benchmarks/sweep_validation.py --tiny    # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from nevisbench.config import compose
from nevisbench.sweep.grid import job_name, parse_sweep
from nevisbench.sweep.jobs import Job
from nevisbench.sweep.sweeper import validate_jobs


def grid_jobs(count: int) -> list[Job]:
    """`count` jobs (a multiple of 10): 2 learners x 5 sparsities x count/10 seeds."""
    grid = parse_sweep(["learner=conv_prune,channel_prune", "learner.sparsity=0.25,0.5,0.75,0.9,0.95",
                        f"seed=range(0,{count // 10})", "budget.flops_per_task=1e12", "stream.tasks=[digits,faces]"])
    return [Job(index=i, name=job_name(i, o, grid.swept), overrides=[*o, "logger.group=bench"])
            for i, o in enumerate(grid.jobs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sample", type=int, default=20, help="jobs composed from scratch, for the per-job baseline")
    parser.add_argument("--tiny", action="store_true", help="10 jobs, a 2-job sample: seconds")
    args = parser.parse_args()
    sizes, sample = ([10], 2) if args.tiny else (args.sizes, args.sample)
    quiet = Console(quiet=True)
    runs = Path("/tmp/nevisbench-bench-runs")
    per_job = {}
    for size in sizes:
        jobs = grid_jobs(size)
        started, cpu = time.perf_counter(), time.process_time()
        validate_jobs(jobs, runs, quiet)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        per_job[size] = seconds / len(jobs)
        print(f"validate_jobs, {len(jobs):>5} jobs: {seconds:7.2f} s wall, {cpu:7.2f} s CPU "
              f"({1000 * per_job[size]:.1f} ms/job)")
    jobs = grid_jobs(max(10, -(-sample // 10) * 10))[:sample]
    started = time.perf_counter()
    for job in jobs:  # what validation did before: one full composition per job
        compose([*job.overrides, f"run_name='{job.name}'", f"out_dir={runs}"])
    scratch = (time.perf_counter() - started) / len(jobs)
    print(f"compose from scratch, {len(jobs)} jobs: {1000 * scratch:.1f} ms/job "
          f"(1,000 jobs: ~{scratch * 1000:.0f} s)")
    largest = max(sizes)
    print(f"ratio, batch validation / composing each job from scratch, per job ({largest} jobs): "
          f"{per_job[largest] / scratch:.3f}")


if __name__ == "__main__":
    main()
