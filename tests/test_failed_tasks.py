"""A task that fails is failed, and only it: outputs that are not finite are never scored as
predictions, and revisit evaluation skips (and records) an earlier task that failed and scores
the rest (issue 34)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, register_learner

from nevisbench.config import compose
from nevisbench.errors import TaskFailed
from nevisbench.run.runner import run

STREAM = [*TINY, "stream.tasks=[digits,faces,shapes]", "budget.milestones=0", "run_name=r", "on_failure=skip"]


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_evaluation_refuses_outputs_that_are_not_finite():
    from nevisbench.compute.flops import FlopMeter
    from nevisbench.run.task.evaluation import evaluate

    class HalfNan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[::2] = float("nan")
            return out

    loader = [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))]
    meter = FlopMeter()
    meter.start_task()
    with pytest.raises(TaskFailed, match=r"not finite \(NaN or inf\) on 50\.0% of the test split \(2 of 4 examples\)"):
        evaluate(HalfNan(), loader, meter, num_classes=3, split="test")


@pytest.mark.slow
def test_a_task_whose_outputs_are_nan_is_failed_naming_the_split_and_the_share(tmp_path, monkeypatch):
    """A NaN BatchNorm running mean gave 100% NaN logits; argmax picked class 0 and the task was ok (0.891)."""
    register_learner(monkeypatch, "nanbn", "failing_learners:NanBatchNormOnFaces")
    run_dir = run(compose([*STREAM, "learner=nanbn", f"out_dir={tmp_path}"]))
    lines = _lines(run_dir)
    assert [line["status"] for line in lines] == ["ok", "failed", "ok"]
    faces = lines[1]
    assert faces["test_error"] is None and "not finite" in faces["error"] and "100.0% of the" in faces["error"]
    assert "split" in faces["error"] and "faces" in faces["error"]


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["failing_learners:LossNanOnFaces", "failing_learners:NanBatchNormOnFaces"])
def test_revisit_skips_a_failed_task_and_scores_the_rest(tmp_path, monkeypatch, learner):
    """One failed task (on_failure=skip) failed every later task with 'task faces's module has no head'."""
    register_learner(monkeypatch, "failing", learner)
    run_dir = run(compose([*STREAM, "learner=failing", "scenario=continual", "eval.revisit=true", f"out_dir={tmp_path}"]))
    lines = _lines(run_dir)
    assert [line["status"] for line in lines] == ["ok", "failed", "ok"], [line.get("error") for line in lines]
    revisit = lines[2]["revisit"]
    assert revisit["tasks"] == ["digits", "faces"] and revisit["test_error"][0] is not None
    assert revisit["test_error"][1] is None and "the task failed" in revisit["skipped"]["faces"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed_tasks"] == ["faces"] and summary["continual"]["average_accuracy"] is not None
