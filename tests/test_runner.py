"""The stream runner end to end (in process), both scenarios, and the learner base class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nevisbench.api.learner import LearnerContext, TaskInfo
from nevisbench.config import compose
from nevisbench.learners.finetune import FinetuneConfig, FinetuneLearner
from nevisbench.run.learner.scenario import Scenario
from nevisbench.run.runner import run


def _run(tmp_path: Path, tiny: list[str], *extra: str) -> Path:
    cfg = compose([*tiny, f"out_dir={tmp_path}", "stream.tasks=[digits,faces]", *extra])
    return run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["transfer", "continual"])
def test_both_scenarios_write_results_and_summary(tmp_path, tiny, scenario):
    run_dir = _run(tmp_path, tiny, f"scenario={scenario}")
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in lines] == ["digits", "faces"]
    for r in lines:
        assert r["steps"] == 2 and r["status"] == "ok" and 0 <= r["test_error"] <= 1
        assert r["flops"]["train"] > 0 and r["flops"]["eval"] > 0
        assert r["flops"]["total"] == pytest.approx(r["flops"]["train"] + r["flops"]["eval"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scenario"] == scenario and summary["num_tasks"] == 2
    assert summary["total_flops"] == pytest.approx(sum(r["flops"]["total"] for r in lines))
    assert lines[-1]["cumulative_flops"] == pytest.approx(summary["total_flops"])
    assert summary["mean_test_error"] == pytest.approx(sum(r["test_error"] for r in lines) / 2)
    saved = compose([])  # the saved config is the resolved one
    assert "scenario: " + scenario in (run_dir / "config.yaml").read_text() and saved is not None


@pytest.mark.slow
def test_same_seed_gives_identical_results(tmp_path, tiny):
    a = json.loads((_run(tmp_path / "a", tiny) / "summary.json").read_text())
    b = json.loads((_run(tmp_path / "b", tiny) / "summary.json").read_text())
    assert [t["test_error"] for t in a["tasks"]] == [t["test_error"] for t in b["tasks"]]
    assert a["total_flops"] == b["total_flops"]


class _Stream:
    """The runner's per-task protocol around a learner: prepare once, then begin/end each task."""

    def __init__(self, scenario: str) -> None:
        train = compose([]).train
        self.learner = FinetuneLearner(
            FinetuneConfig(), LearnerContext(scenario=scenario, seed=0, image_size=16, train=train, feature_dim=4)
        )
        self.scenario = Scenario(scenario, self.learner.prepare(nn.Sequential(nn.Flatten(), nn.Linear(12, 4))))

    def begin_task(self, task: TaskInfo):
        return self.learner.begin_task(task, self.scenario.start())

    def end_task(self, task: TaskInfo, module) -> None:
        self.learner.end_task(task, module)
        self.scenario.finish(module)

    def state_dict(self):
        return self.scenario.state_dict()

    def load_state_dict(self, state) -> None:
        self.scenario.load_state_dict(state)


def _learner(scenario: str) -> _Stream:
    return _Stream(scenario)


@pytest.mark.parametrize("scenario", ["transfer", "continual"])
def test_scenario_decides_where_the_next_task_starts(scenario):
    learner = _learner(scenario)
    first = learner.begin_task(TaskInfo("a", "a", 0, "x", 3))
    initial = first.backbone[1].weight.detach().clone()
    with torch.no_grad():
        first.backbone[1].weight.add_(1.0)  # "training"
    learner.end_task(TaskInfo("a", "a", 0, "x", 3), first)
    second = learner.begin_task(TaskInfo("b", "b", 1, "x", 5))
    expected = initial + 1.0 if scenario == "continual" else initial
    assert torch.equal(second.backbone[1].weight, expected)
    assert second.head.out_features == 5  # always a new head
    assert second.backbone is not first.backbone


def test_continual_state_round_trips():
    learner = _learner("continual")
    module = learner.begin_task(TaskInfo("a", "a", 0, "x", 3))
    with torch.no_grad():
        module.backbone[1].weight.fill_(7.0)
    learner.end_task(TaskInfo("a", "a", 0, "x", 3), module)
    restored = _learner("continual")
    restored.load_state_dict(learner.state_dict())
    nxt = restored.begin_task(TaskInfo("b", "b", 1, "x", 2))
    assert torch.all(nxt.backbone[1].weight == 7.0)
