"""`nevisbench sweep`: grids in Hydra's grammar, validation before launch, the local launcher,
a sweep killed with SIGKILL and started again (every job runs exactly once), `sweep status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, without_timing

from nevisbench.errors import ConfigError
from nevisbench.sweep.grid import expand_logspace, job_name, load_experiment, parse_sweep
from nevisbench.sweep.launchers import load_launcher
from nevisbench.sweep.local import local_slots

# Three tiny runs (one task, two steps, 16 px), two at a time.
TINY_SWEEP = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16",
              "train.max_steps=2", "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0",
              "seed=0,1,2", "launcher=local", "launcher.jobs=2"]


def test_grid_is_the_product_of_lists_ranges_and_logspace():
    grid = parse_sweep(["learner=conv_prune,channel_prune", "learner.sparsity=0.25,0.5", "seed=range(0,2)",
                        "budget.flops_per_task=logspace(1e11,1e13,3)", "stream.tasks=[digits,faces]",
                        "launcher.jobs=2", "sweep_dir=/tmp/x"])
    assert len(grid.jobs) == 2 * 2 * 2 * 3
    assert grid.swept == ("learner", "learner.sparsity", "seed", "budget.flops_per_task")
    assert grid.jobs[0] == ("learner=conv_prune", "learner.sparsity=0.25", "seed=0",
                            "budget.flops_per_task=100000000000.0", "stream.tasks=[digits,faces]")
    assert {j[3] for j in grid.jobs} == {"budget.flops_per_task=100000000000.0",
                                         "budget.flops_per_task=1000000000000.0",
                                         "budget.flops_per_task=10000000000000.0"}
    assert grid.sweep == {"launcher.jobs": "2", "sweep_dir": "/tmp/x"}  # never passed to a run
    assert expand_logspace("b=logspace(1e11,1e13,5)") == "b=1e+11,3.162e+11,1e+12,3.162e+12,1e+13"
    assert job_name(3, grid.jobs[0], grid.swept) == "003-conv_prune-sparsity=0.25-seed=0-flops_per_task=1e+11"
    # a later override of a key replaces the earlier one (command line over preset)
    assert parse_sweep(["seed=0,1", "seed=5"]).jobs == (("seed=5",),)


def test_a_shuffled_axis_lists_the_same_jobs_on_every_invocation():
    """Hydra's shuffle() is random: seeded from its text, a rerun of the same sweep command gets the
    same grid (job names and order) and the caller's random stream is left as it was."""
    import random

    command = ["seed=shuffle(range(0,8))", "learner=finetune,conv_prune"]
    random.seed(123)
    first = parse_sweep(command).jobs
    after = random.random()
    random.seed(123)
    assert random.random() == after  # parsing drew nothing from the caller's stream
    random.seed(7)  # another global state, as in another process
    assert parse_sweep(command).jobs == first
    seeds = [job[0] for job in first[::2]]
    assert sorted(seeds) == [f"seed={i}" for i in range(8)] and seeds != sorted(seeds)  # shuffled, every value once


@pytest.mark.parametrize("item, message", [
    ("budget.flops_per_task=logspace(1e11,0,3)", "logspace takes (start, stop, num)"),
    ("train.lr=interval(0,1)", "an interval has no finite list of values"),
    ("run_name=a,b", "the sweep sets 'run_name' for each job"),
    ("launcher=local,slurm", "'launcher' configures the sweep and takes one value"),
    ("=5", "Bad override '=5': expected key=value"),
])
def test_grid_errors_name_the_override(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_sweep([item])


def test_presets_are_sweeps_of_valid_keys():
    items = load_experiment("paper_fig2")
    grid = parse_sweep(items)
    assert len(grid.jobs) == 3 * 3 * 5 * 2 * 3 and "stream=short" in grid.jobs[0]
    assert parse_sweep(load_experiment("paper_fig7")).swept[0] == "learner.signal"
    demo = parse_sweep(load_experiment("demo_frontier"))
    assert len(demo.jobs) == 8 and set(demo.swept) == {"learner", "budget.flops_per_task", "seed"}
    zoo = parse_sweep(load_experiment("cl_zoo"))  # examples/README.md's table: every example, revisited
    assert len(zoo.jobs) == 7 * 2 and all("eval.revisit=True" in job and "scenario=continual" in job for job in zoo.jobs)
    assert parse_sweep(load_experiment("cl_zoo_vit")).jobs[0].count("backbone.name=vit_tiny") == 1  # a tuple of overrides
    with pytest.raises(ConfigError, match="Unknown experiment 'paper_fig9'. Valid: cl_zoo, cl_zoo_vit, demo_frontier, paper_fig2"):
        load_experiment("paper_fig9")


def test_launcher_config_and_slots(monkeypatch):
    cfg = load_launcher({"launcher": "slurm", "launcher.partition": "gpu", "launcher.timeout_min": "60"})
    assert (cfg.name, cfg.partition, cfg.timeout_min, cfg.gpus_per_node) == ("slurm", "gpu", 60, 1)
    with pytest.raises(ConfigError, match="Invalid value for 'launcher.jobs': 'many'"):
        load_launcher({"launcher.jobs": "many"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in local_slots(None)] == ["2", "5"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in local_slots(3)] == ["2", "5", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert local_slots(2) == [{"OMP_NUM_THREADS": "4"}, {"OMP_NUM_THREADS": "4"}]


@pytest.mark.slow
def test_a_bad_value_anywhere_stops_the_sweep_before_any_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", "learner=finetune,conv_prune", "learner.sparsity=0.5,1.5", "train.max_steps=2",
                     f"sweep_dir={sweep_dir}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # the first job that fails: finetune has no sparsity key
    assert lines[0].startswith("error: Sweep job 0 (learner=finetune learner.sparsity=0.5 train.max_steps=2): "
                               "Unknown config key 'learner.sparsity'"), lines[0]
    assert "Nothing was launched" in lines[0]
    assert not sweep_dir.exists()
    result = run_cli("sweep", "learner=conv_prune", "learner.sparsity=0.5,1.5", f"sweep_dir={sweep_dir}",
                     "launcher=slurn")
    assert result.returncode == 2 and "Unknown launcher 'slurn'. Valid: local, slurm." in result.stderr


def _jobs(sweep_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (sweep_dir / "jobs.jsonl").read_text().splitlines()]
    except (OSError, json.JSONDecodeError):
        return []


# Two tasks per run, so the kill can land between a run's tasks (its first task committed, the
# second still to do): the resumed run must give the numbers the uninterrupted one gives.
KILL_SWEEP = [*TINY_SWEEP[:1], "stream.tasks=[digits,faces]", *TINY_SWEEP[2:]]


def _table(sweep_dir: Path) -> tuple[str, str]:
    """The sweep's comparison (CSV, Markdown). It has no wall-clock column; if one is ever added,
    drop exactly that column here."""
    return (sweep_dir / "comparison.csv").read_text(), (sweep_dir / "comparison.md").read_text()


@pytest.mark.slow
def test_sweep_killed_midway_finishes_every_job_exactly_once_with_the_same_table(tmp_path):
    # the reference: the same sweep, never interrupted
    reference = run_cli("sweep", *KILL_SWEEP, f"sweep_dir={tmp_path / 'reference'}", timeout=300)
    assert reference.returncode == 0, reference.stdout + reference.stderr

    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "nevisbench", "sweep", *KILL_SWEEP, f"sweep_dir={sweep_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    most_at_once, deadline = 0, time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill once a job is done and another is between its tasks
            jobs = _jobs(sweep_dir)
            running = [j for j in jobs if j["state"] == "running"]
            most_at_once = max(most_at_once, len(running))
            runs = [sweep_dir / "runs" / j["name"] for j in running]
            if any(j["state"] == "done" for j in jobs) and any(
                    (r / "results.jsonl").is_file() and (r / "results.jsonl").read_text().count("\n") == 1
                    and not (r / "summary.json").exists() for r in runs):
                break
            assert first.poll() is None, first.stdout.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the sweep never reached the point to kill it")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and its job processes, as a killed session
        first.wait()
    assert most_at_once == 2  # launcher.jobs=2: two runs at a time
    runs = sweep_dir / "runs"  # what the kill left: the run folders are the truth
    finished_before = {p.name for p in runs.iterdir() if (p / "summary.json").is_file()}
    interrupted = {p.name for p in runs.iterdir() if (p / "config.yaml").is_file()} - finished_before
    half_done = {p.name for p in runs.iterdir() if p.name in interrupted and (p / "results.jsonl").is_file()
                 and len((p / "results.jsonl").read_text().splitlines()) == 1}
    assert finished_before and half_done
    committed = {name: (runs / name / "results.jsonl").read_text() for name in half_done}

    again = run_cli("sweep", *KILL_SWEEP, f"sweep_dir={sweep_dir}", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(finished_before)} job(s) already finished: skipped." in again.stdout
    after = {j["name"]: j for j in _jobs(sweep_dir)}
    assert {j["state"] for j in after.values()} == {"done"}
    for name, job in after.items():
        if name in finished_before:
            assert job["attempts"] == 1  # not run again
        elif name in interrupted:
            assert job["attempts"] == 2 and job["command"][1].startswith("resume=")  # continued, not restarted
        else:  # not started, or killed before its run folder held a config: started afresh
            assert job["attempts"] in (1, 2) and not job["command"][1].startswith("resume=")
    # one run folder per job, one results line per task, nothing run twice
    assert sorted(p.name for p in (sweep_dir / "runs").iterdir()) == sorted(after)
    for name in after:
        lines = (sweep_dir / "runs" / name / "results.jsonl").read_text().splitlines()
        assert [json.loads(line)["task"] for line in lines] == ["digits", "faces"]
    for name, text in committed.items():  # the task committed before the kill was kept, not redone
        assert (sweep_dir / "runs" / name / "results.jsonl").read_text().startswith(text)

    # the same comparison as the uninterrupted sweep, to the last digit
    assert _table(sweep_dir) == _table(tmp_path / "reference")
    rows = (sweep_dir / "comparison.csv").read_text().splitlines()
    assert rows[0] == "configuration,scenario,stream,budget,seeds,error_mean,error_std,flops_mean,measure,flops_without_search_mean"
    assert len(rows) == 2 and rows[1].startswith("finetune,transfer,demo,2 steps/task,3,")
    assert (sweep_dir / "comparison.png").stat().st_size > 10_000
    for name in after:  # and the same runs: each summary equal but for wall-clock fields
        ran = json.loads((sweep_dir / "runs" / name / "summary.json").read_text())
        ref = json.loads((tmp_path / "reference" / "runs" / name / "summary.json").read_text())
        assert without_timing(ran) == without_timing(ref), name

    status = run_cli("sweep", "status", str(sweep_dir))
    assert status.returncode == 0
    assert "3 done" in status.stdout and all(name in status.stdout for name in after)


def test_local_slots_give_a_ddp_job_all_its_devices_at_once():
    import threading

    from nevisbench.sweep.jobs import Job
    from nevisbench.sweep.local import SlotPool

    pool = SlotPool([{"CUDA_VISIBLE_DEVICES": g} for g in ("0", "1", "2")])
    ddp, single = Job(index=0, name="ddp", overrides=[], devices=2), Job(index=1, name="one", overrides=[])
    assert pool.need(ddp) == 2 and pool.need(single) == 1
    with pytest.raises(ConfigError, match=r"Sweep job 2 \(big\) trains on 4 devices but launcher=local has 3 GPU"):
        pool.need(Job(index=2, name="big", overrides=[], devices=4))
    first = pool.take(2)
    assert pool.env(first) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    got: list[list[int]] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take(2)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # one slot free: the DDP job waits, holding nothing
    assert pool.take(1) == [2]
    pool.give(first)
    waiter.join(5)
    assert got == [[0, 1]]
    # launcher.jobs=4 on 2 GPUs: slots 0,1,0,1; a 2-GPU job never gets one GPU twice
    shared = SlotPool([{"CUDA_VISIBLE_DEVICES": g} for g in ("0", "1", "0", "1")])
    with pytest.raises(ConfigError, match="trains on 3 devices but launcher=local has 2 GPU"):
        shared.need(Job(index=4, name="three", overrides=[], devices=3))
    assert shared.take(1) == [0] and shared.take(1) == [1]
    shared.give([1])
    pair = shared.take(2)  # free: 1, 2 (GPU 0), 3 (GPU 1) -> slots 1 and 2, GPUs 1 and 0
    assert shared.env(pair) == {"CUDA_VISIBLE_DEVICES": "1,0"}
    cpu = SlotPool([{"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "1"}])
    assert cpu.need(Job(index=3, name="cpu", overrides=[], devices=8)) == 2  # CPU processes share the cores
    assert cpu.env(cpu.take(2)) == {"OMP_NUM_THREADS": "1"}
