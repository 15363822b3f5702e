"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), its cost against
finetuning, that its running importance survives a run killed mid-task and resumed (it lives in
module buffers), and its forgetting measured by revisit evaluation."""

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
def test_forgetting_is_measured_and_the_penalty_acts_from_the_second_task(tmp_path):
    # measured on the shared 2-core machine: both learn little in 60 steps from a random ResNet-18
    # (digits 0.80 test error, chance 0.90) and finetuning's forgetting is negative there (-0.03;
    # SI's +0.008 at c=1), so this tiny stream cannot show SI forgetting less; what it pins: the first
    # task trains exactly as finetuning (no penalty yet, omega's bookkeeping changes nothing) and the
    # penalty acts on the second task's training. Its test error is not compared with finetuning's: 33 test
    # images make it a multiple of 1/33, and CI once saw both at 20/33 though their training differed
    si = run_learner("si", tmp_path / "si", CONTINUAL)
    finetune = run_learner("finetune", tmp_path / "ft", CONTINUAL)
    # the same to within the float noise of two runs in one process (an earlier test's run in this suite
    # leaves the process in another state; the exact equality held alone and failed after the suite)
    assert si["_lines"][0]["test_error"] == pytest.approx(finetune["_lines"][0]["test_error"], abs=0.02)
    reports = [line["learner_report"] for line in si["_lines"]]
    assert reports[0]["last_step_penalty"] is None  # no earlier task: no penalty on the first
    assert reports[1]["last_step_penalty"] > 0  # the pull towards the first task's weights is on
    assert all(a is not None for a in si["continual"]["accuracy_matrix"][1])
    assert si["continual"]["forgetting"] is not None and "stale_heads" not in si["continual"]
