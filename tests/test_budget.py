"""FLOP budgets and anytime evaluation in real (tiny) runs."""

from __future__ import annotations

import json

import pytest

from nevisbench.config import compose
from nevisbench.run.runner import run

# resnet18 at 16px, batch 16: one training step costs ~0.9 GFLOP (head-size dependent)
TASKS = "stream.tasks=[digits,faces]"


def _summary(tmp_path, tiny, *extra):
    return json.loads((run(compose([*tiny, TASKS, f"out_dir={tmp_path}", *extra])) / "summary.json").read_text())


def test_budget_stops_each_task_at_its_training_flops_and_half_budget_halves_them(tmp_path, tiny):
    full = _summary(tmp_path / "full", tiny, "budget.flops_per_task=3e10", "budget.milestones=5")
    half = _summary(tmp_path / "half", tiny, "budget.flops_per_task=1.5e10", "budget.milestones=5")
    for task in full["tasks"] + half["tasks"]:
        budget = task["budget"]["flops_per_task"]
        assert 0.95 * budget <= task["flops"]["train"] <= 1.02 * budget
        assert task["budget"]["spent"] == task["flops"]["train"]
    ratio = half["flops"]["train"] / full["flops"]["train"]
    assert ratio == pytest.approx(0.5, abs=0.03)
    assert full["tasks"][0]["steps"] > half["tasks"][0]["steps"] > 2  # the budget, not max_steps, decides


def test_milestones_are_placed_at_log_spaced_fractions_of_the_planned_compute(tmp_path, tiny):
    summary = _summary(tmp_path, tiny, "train.max_steps=16", "budget.milestones=5", "budget.first_milestone=0.0625")
    for task in summary["tasks"]:
        records = task["anytime"]
        assert [r["fraction"] for r in records] == pytest.approx([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1])
        per_step = task["flops"]["train"] / task["steps"]
        # each evaluation happens at the first step whose training compute reaches the milestone
        assert [r["step"] for r in records] == [1, 2, 4, 8, 16]
        assert [r["train_flops"] for r in records] == pytest.approx([per_step * s for s in (1, 2, 4, 8, 16)])
        assert all(0 <= r["dev_error"] <= 1 for r in records)
        assert task["flops"]["eval"] > 0  # milestone and test evaluations are evaluation compute
    curve = summary["curve"]
    assert len(curve) == 5 and summary["auc"] is not None
    assert all(a["flops"] <= b["flops"] for a, b in zip(curve, curve[1:]))


def test_executed_measure_budgets_executed_flops(tmp_path, tiny):
    summary = _summary(tmp_path, tiny, "budget.flops_per_task=2e10", "budget.measure=executed", "budget.milestones=2")
    for task in summary["tasks"]:
        assert 0.95 * 2e10 <= task["flops"]["executed"]["train"] <= 1.02 * 2e10
