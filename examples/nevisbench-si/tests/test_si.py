"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), its cost against
finetuning, that its running importance survives a run killed mid-task and resumed (it lives in
module buffers), and what it exists for: less forgetting than finetuning."""

import json
import os
import signal
import subprocess
import sys

import pytest

from nevisbench.testing import check_learner, run_learner

CONTINUAL = ["scenario=continual", "eval.revisit=true", "stream.tasks=[digits,shapes]", "data.image_size=32",
             "train.max_steps=60", "budget.milestones=0"]
TINY = ["stream=demo", "stream.tasks=[faces,shapes]", "backbone.weights=none", "data.image_size=16",
        "data.batch_size=16", "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0", "run_name=si",
        "learner=si", "scenario=continual", "train.max_steps=6", "train.checkpoint_every_n_steps=2"]


def test_si_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("si", tmp_path, cheap=True)
    assert summaries["continual"]["learner"] == "si"


def test_the_bookkeeping_and_the_penalty_cost_no_flops_beyond_finetuning(tmp_path):
    steps = ["scenario=continual", "train.max_steps=3"]
    si = run_learner("si", tmp_path / "si", steps)["_lines"]
    finetune = run_learner("finetune", tmp_path / "ft", steps)["_lines"]
    # omega's update and the penalty are elementwise, which the meter does not count (docs/flop-meter.md):
    # a step costs exactly a finetuning step, on the first task and once the penalty is on
    assert [line["flops"]["train"] for line in si] == [line["flops"]["train"] for line in finetune]
    assert si[0]["learner_report"]["importance_total"] > 0  # the importance was accumulated


def _run(*args, fault=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NEVISBENCH_FAULT", None)
    if fault:
        env["NEVISBENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "nevisbench", "run", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _importance(run_dir):
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return [line["learner_report"]["importance_total"] for line in lines]


def test_a_run_killed_mid_task_resumes_with_the_importance_it_had(tmp_path):
    whole = _run(*TINY, f"out_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = _run(*TINY, f"out_dir={tmp_path / 'killed'}", fault="step:1:4")  # after the second task's 4th step
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(f"resume={tmp_path / 'killed' / 'si'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # steps 1-4 of the second task added to omega before the kill: the resumed run still has them
    assert _importance(tmp_path / "killed" / "si") == pytest.approx(_importance(tmp_path / "whole" / "si"), rel=1e-6)


@pytest.mark.slow
def test_si_forgets_less_than_finetuning(tmp_path):
    si = run_learner("si", tmp_path / "si", CONTINUAL)["continual"]
    finetune = run_learner("finetune", tmp_path / "ft", CONTINUAL)["continual"]
    assert all(a is not None for a in si["accuracy_matrix"][1])
    assert si["forgetting"] < finetune["forgetting"]
