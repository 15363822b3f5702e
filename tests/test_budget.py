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


@pytest.mark.slow
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


@pytest.mark.slow
def test_milestones_are_placed_at_log_spaced_fractions_of_the_planned_compute(tmp_path, tiny):
    summary = _summary(tmp_path, tiny, "train.max_steps=16", "budget.milestones=5", "budget.first_milestone=0.0625",
                       "budget.auc_min_flops=1e6")  # the AUC covers [1e6, where the run ends]
    for task in summary["tasks"]:
        records = task["anytime"]
        assert [r["fraction"] for r in records] == pytest.approx([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1])
        per_step = task["flops"]["train"] / task["steps"]
        # each evaluation happens at the first step whose training compute reaches the milestone
        assert [r["step"] for r in records] == [1, 2, 4, 8, 16]
        assert [r["train_flops"] for r in records] == pytest.approx([per_step * s for s in (1, 2, 4, 8, 16)])
        assert all(0 <= r["dev_error"] <= 1 for r in records)
        assert task["flops"]["eval"] > 0  # milestone and test evaluations are evaluation compute
    curve = summary["anytime_curve"]  # the milestone curve (transfer scenario)
    assert len(curve) == 5 and summary["auc"] is not None
    assert all(a["flops"] <= b["flops"] for a, b in zip(curve, curve[1:], strict=False))


@pytest.mark.slow
def test_executed_measure_budgets_executed_flops(tmp_path, tiny):
    summary = _summary(tmp_path, tiny, "budget.flops_per_task=2e10", "budget.measure=executed", "budget.milestones=2")
    for task in summary["tasks"]:
        assert 0.95 * 2e10 <= task["flops"]["executed"]["train"] <= 1.02 * 2e10


# -- the LR schedule of a budgeted task (a real Trainer with the runner's callbacks, no runner) --------
import math  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402

from nevisbench.compute.flops import FlopMeter  # noqa: E402
from nevisbench.run.task.callbacks import FlopMeterCallback, PlanCallback, TaskPlan  # noqa: E402


class _LearningRates(L.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])  # the rate this step uses


def _budgeted_fit(learner_cls, budget_steps: float, overrides: list[str]):
    from test_meter_honest import _module, _train

    from nevisbench.tasks.loader import BatchLoader, Split

    dense_step = _train(_module(learner_cls), 1).last_train_cost.measure("algorithmic")
    module = _module(learner_cls)
    module.train_cfg = compose(overrides).train
    meter, rates = FlopMeter(), _LearningRates()
    meter.start_task()
    plan = TaskPlan(measure="algorithmic", max_steps=1000, budget=budget_steps * dense_step, fractions=[])
    x = torch.randint(0, 255, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loader = BatchLoader(Split(x, torch.arange(16) % 10), batch_size=4, image_size=16, train=True, augment=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=-1, max_epochs=-1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[FlopMeterCallback(meter), PlanCallback(meter, plan, lambda: 0.0, steps_per_epoch=4), rates])
    trainer.fit(module, train_dataloaders=loader)
    return plan, meter, rates.rates, trainer, dense_step


@pytest.mark.slow
def test_budgeted_lr_schedule_is_warmup_cosine_over_the_planned_steps_from_step_0():
    """Before: the schedule read trainer.max_steps, -1 until the budget set it after step 0, so
    the rates were [0.1, 0.0, 0.09, ...] and warmup was lost."""
    from nevisbench import Learner

    plan, meter, rates, trainer, _ = _budgeted_fit(Learner, 12.5, ["train.lr=0.1", "train.warmup_steps=4"])
    assert plan.steps == 12 and trainer.global_step == 12 and len(rates) == 12 and not plan.replans

    def expected(step: int, total: int = 12, warmup: int = 4) -> float:
        if step < warmup:
            return 0.1 * (step + 1) / (warmup + 1)
        return 0.1 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    assert rates == pytest.approx([expected(s) for s in range(12)])
    assert rates[:4] == pytest.approx([0.02, 0.04, 0.06, 0.08])


@pytest.mark.slow
def test_a_cost_drop_mid_task_replans_the_remaining_steps_from_the_remaining_budget():
    from cheating_learners import ShrinkingMaskLearner

    plan, meter, rates, trainer, dense_step = _budgeted_fit(ShrinkingMaskLearner, 16, ["train.warmup_steps=0"])
    sparse_step = meter.last_train_cost.measure("algorithmic")
    # 10 dense steps, then the rest of the budget buys floor(6 dense steps / sparse cost) more
    assert plan.replans and plan.replans[-1]["step"] >= 10
    assert trainer.global_step == plan.steps > 16
    assert meter.task.train <= 16 * dense_step * (1 + 1e-9)
    assert meter.task.train > 16 * dense_step - sparse_step
