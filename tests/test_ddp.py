"""Multi-device runs (trainer.devices=N) with Lightning's DDP, on CPU processes talking gloo: the
meter sums every rank's count, the global batch is split (not multiplied), one process writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, without_timing

from nevisbench.tasks.loader import BatchLoader, Split

DDP = ["learner=finetune", "stream=demo", "stream.tasks=[faces,shapes]", "train.max_steps=4", "data.image_size=16",
       "data.batch_size=16", "trainer=cpu", "trainer.progress_bar=false", "backbone.weights=none",
       "budget.flops_per_task=5e9", "budget.milestones=3"]


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_ranks_draw_one_global_batch_and_each_trains_on_its_slice():
    generator = torch.Generator().manual_seed(0)
    split = Split(images=torch.randint(0, 256, (40, 3, 20, 20), dtype=torch.uint8, generator=generator),
                  labels=torch.arange(40) % 7)
    common = dict(batch_size=8, image_size=16, train=True, augment=True, seed=3)
    whole = list(BatchLoader(split, **common))
    halves = [list(BatchLoader(split, shard=(rank, 2), **common)) for rank in (0, 1)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 5  # the step count does not depend on the ranks
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves, strict=False):
        assert x0.shape[0] == x1.shape[0] == 4
        assert torch.equal(torch.cat([y0, y1]), y)
        assert torch.allclose(torch.cat([x0, x1]), x)  # same crops and flips as the one-process batch
    with pytest.raises(ValueError, match="does not split a batch of 8"):
        BatchLoader(split, shard=(0, 3), **common)


@pytest.mark.slow
def test_two_process_ddp_counts_one_process_flops_writes_once_and_resumes_after_a_kill(tmp_path):
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        done = run_cli("run", *DDP, f"trainer.devices={devices}", "train.checkpoint_every_n_steps=1", f"out_dir={out}",
                       timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        folders = list(out.iterdir())
        assert len(folders) == 1, folders  # one run folder, written once (no rank writes its own)
        runs[devices] = folders[0]
    one, two = _lines(runs[1]), _lines(runs[2])
    assert [line["task"] for line in two] == ["faces", "shapes"]
    for a, b in zip(one, two, strict=False):
        assert b["flops"]["train"] == pytest.approx(a["flops"]["train"], rel=0.01)  # the bar; here it is exact
        assert b["flops"]["train"] > 4e9  # the budget (5e9) counted globally: half would mean one rank's count
        assert b["steps"] == a["steps"]
        assert b["budget"]["ratio"] == pytest.approx(a["budget"]["ratio"], rel=0.01)
        assert b["flops"]["eval"] == a["flops"]["eval"]  # evaluation is charged once, as one process spends it
        assert [r["step"] for r in b["anytime"]] == [r["step"] for r in a["anytime"]]
    summary = json.loads((runs[2] / "summary.json").read_text())
    assert summary["flops"]["train"] == pytest.approx(sum(line["flops"]["train"] for line in one), rel=0.01)
    assert not (runs[2] / ".lock").exists() and not (runs[2] / "state").exists()

    # every rank reaches the crash point and is SIGKILLed there (a pre-empted node), then resume
    killed = tmp_path / "killed"
    done = run_cli("run", *DDP, "trainer.devices=2", "train.checkpoint_every_n_steps=1", f"out_dir={tmp_path}",
                   "run_name=killed", timeout=300, env_extra={"NEVISBENCH_FAULT": "step:1:2"})
    assert done.returncode == -9, done.stderr[-2000:]
    assert len(_lines(killed)) == 1 and (killed / "state" / "task_1.ckpt").exists()
    done = run_cli("run", "trainer.devices=2", f"resume={killed}", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((killed / "summary.json").read_text())
    assert without_timing(resumed) == without_timing(summary)


@pytest.mark.slow
def test_a_loss_gone_bad_stops_every_rank_and_is_charged_as_on_one_device(tmp_path):
    lines = {}
    for devices in (1, 2):
        done = run_cli("run", *DDP[:2], "stream.tasks=[faces]", *DDP[3:9], "train.max_steps=3", "train.lr=1e12",
                       f"trainer.devices={devices}", f"out_dir={tmp_path}", f"run_name=d{devices}", timeout=300)
        assert done.returncode == 1 and "The stream stopped (on_failure=stop)" in done.stderr, done.stderr[-2000:]
        lines[devices] = _lines(tmp_path / f"d{devices}")[0]
    assert lines[2]["status"] == lines[1]["status"] == "failed"
    # the first sign of the divergence: the NaN loss, or (one step earlier) non-finite outputs at a dev milestone
    assert "the loss is nan at step 2" in lines[2]["error"] or "the training diverged" in lines[2]["error"]
    # the failing step is charged whole on both (its tail is charged without a collective under DDP)
    assert lines[2]["flops"]["train"] == pytest.approx(lines[1]["flops"]["train"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["data.batch_size=15", "trainer.devices=2"], "'data.batch_size': 15 is the global batch and must split evenly"),
    (["learner=learned_prune", "trainer.devices=2"], "learner 'learned_prune' cannot train under DDP"),
    (["trainer.devices=[0,1]"], "'trainer.devices': [0, 1] names CUDA devices but trainer.accelerator=cpu"),
    (["search=nevis_cheap", "search.parallel=2", "trainer.devices=2"], "'search.parallel': 2 with trainer.devices=2"),
])
def test_ddp_misconfigurations_are_one_line_errors(tmp_path, overrides, message):
    done = run_cli("run", *DDP[1:], *overrides, f"out_dir={tmp_path}")
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # nothing created


def test_a_rank_other_than_0_reads_the_run_folder_and_writes_nothing(tmp_path):
    from nevisbench.config import compose
    from nevisbench.run.search.study import TaskSearch
    from nevisbench.run.store.results import ResultsStore

    store = ResultsStore(tmp_path, writer=False)
    store.write_config("x: 1\n")
    store.append({"task": "digits"})
    store.save_task_state(0, {"learner": {}, "scenario": {}, "meter": {}})
    store.write_summary({"tasks": []})
    search = TaskSearch(compose(["search=nevis_cheap"]), 0, store.state_dir, writer=False)
    search.save(0, {"k": 0}, {"w": torch.zeros(1)})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["state"]  # only the (empty) state folder it reads from
    written = ResultsStore(tmp_path)
    written.append({"task": "digits"})
    assert ResultsStore(tmp_path, writer=False).read_results() == [{"task": "digits"}]


_WITH_PLUGIN = """
import sys
from importlib.metadata import EntryPoint
from nevisbench import cli, registry
found = dict(registry._entry_points())
found["hidden"] = EntryPoint(name="hidden", value="cheating_learners:RankHiddenEvalLearner", group=registry.ENTRY_POINT_GROUP)
registry._entry_points = lambda: found
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_work_hidden_on_a_rank_whose_meter_is_not_written_is_still_charged(tmp_path):
    """The plugin's module does 3 extra forward passes per evaluated batch on rank 1 only; the
    script registers it as an installed plugin would (Lightning re-runs the script for rank 1)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "with_plugin.py"
    script.write_text(_WITH_PLUGIN)
    tests = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent / "helpers")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    lines = {}
    for learner, devices in (("finetune", 2), ("hidden", 2)):
        done = subprocess.run([sys.executable, str(script), "run", f"learner={learner}", *DDP[1:2], "stream.tasks=[faces]",
                               *DDP[3:], "budget.milestones=0", f"trainer.devices={devices}", f"out_dir={tmp_path}",
                               f"run_name={learner}"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        lines[learner] = _lines(tmp_path / learner)[0]
    honest, hidden = lines["finetune"]["flops"], lines["hidden"]["flops"]
    assert hidden["train"] == honest["train"]  # training is the same
    assert hidden["eval"] == pytest.approx(4 * honest["eval"], rel=1e-6)  # rank 1's four passes per batch


def test_when_lightnings_observer_stops_the_run_the_line_names_the_dead_rank_and_the_resume(tmp_path, capfd):
    """Lightning's process observer SIGKILLs rank 0 right after logging which child ended: the line
    the user sees is printed from that log record, before the kill."""
    import logging

    from lightning.fabric.utilities.rank_zero import rank_prefixed_message

    from nevisbench.run.task.distributed import watch_ranks
    from nevisbench.run.task.lightning import quiet_lightning

    quiet_lightning()
    watch_ranks(tmp_path / "r")
    observer = logging.getLogger("lightning.fabric.strategies.launchers.subprocess_script")
    observer.info(rank_prefixed_message("Child process with PID 4242 terminated with code -9. Forcefully "
                                        "terminating all other processes to avoid zombies 🧟", rank=1))
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"error: DDP rank 1 (pid 4242, killed by SIGKILL) died. Every rank is stopped; finished tasks are "
                   f"kept in {tmp_path / 'r'}. Resume with: nevisbench run resume={tmp_path / 'r'}"]


@pytest.mark.slow
def test_a_rank_killed_mid_task_is_named_with_the_resume_command_and_the_resume_finishes(tmp_path):
    run_dir = tmp_path / "k"
    killed = run_cli("run", *DDP, "trainer.devices=2", "train.checkpoint_every_n_steps=1", f"out_dir={tmp_path}",
                     "run_name=k", timeout=300, env_extra={"NEVISBENCH_FAULT": "rank1@step:1:2"})
    assert killed.returncode != 0, killed.stderr[-2000:]
    assert "DDP rank 1 (pid " in killed.stderr and "killed by SIGKILL) died" in killed.stderr, killed.stderr[-2000:]
    assert f"nevisbench run resume={run_dir}" in killed.stderr and "Traceback" not in killed.stderr
    assert [line["task"] for line in _lines(run_dir)] == ["faces"]
    done = run_cli("run", "trainer.devices=2", f"resume={run_dir}", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line["task"] for line in _lines(run_dir)] == ["faces", "shapes"] and (run_dir / "summary.json").exists()
