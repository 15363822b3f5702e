"""The meter against learners built to fool it (tests/helpers/cheating_learners.py), and op-exact mask
accounting on tiny nets. Steps are trained by a real Lightning Trainer with the meter's callback,
as the runner does, on a resnet18 at 16x16 px."""

from __future__ import annotations

import cheating_learners
import lightning as L
import pytest
import torch
import torch.nn.utils.prune as prune
from cheating_learners import CheapFirstStepLearner, ExtraForwardLearner, FakeMaskLearner, ShrinkingMaskLearner
from torch import nn

from nevisbench.api.learner import Learner, LearnerContext, TaskInfo, clone_module
from nevisbench.compute.flops import FlopMeter, StepCounter, StepFlops
from nevisbench.config import compose
from nevisbench.run.learner.backbone import build_backbone
from nevisbench.run.task.metering import FlopMeterCallback
from nevisbench.tasks.loader import BatchLoader, Split

TASK = TaskInfo("t", "t", 0, "object", 10)
BATCH = 4


def _module(learner_cls: type[Learner]) -> L.LightningModule:
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18", "none", image_size=16)
    learner = learner_cls(learner_cls.Config(), LearnerContext("transfer", 0, 16, compose([]).train, dim))
    return learner.begin_task(TASK, clone_module(learner.prepare(backbone)))


def _train(module: L.LightningModule, steps: int, meter: FlopMeter | None = None) -> FlopMeter:
    meter = meter or FlopMeter()
    meter.start_task()
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (BATCH * 4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    loader = BatchLoader(Split(x, torch.arange(BATCH * 4) % 10), batch_size=BATCH, image_size=16, train=True, augment=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[FlopMeterCallback(meter)])
    trainer.fit(module, train_dataloaders=loader)
    return meter


@pytest.fixture(scope="module")
def dense() -> StepFlops:
    """One plain finetuning step of the resnet18 (whole batch), counted."""
    return _train(_module(Learner), 1).last_train_cost


def test_a_zero_mask_on_a_dummy_weight_discounts_nothing(dense):
    meter = _train(_module(FakeMaskLearner), 2)
    assert meter.task.executed_train == pytest.approx(2 * dense.measure("executed"))
    assert meter.task.train == pytest.approx(meter.task.executed_train)  # algorithmic = dense, not 0
    assert meter.task.train > 0


def test_an_extra_forward_in_on_train_batch_end_is_charged(dense):
    meter = _train(_module(ExtraForwardLearner), 3)
    forward_only = dense.forward  # the extra pass has no backward
    assert meter.task.train_forward == pytest.approx(3 * (dense.forward + forward_only))
    assert meter.task.train_backward == pytest.approx(3 * dense.backward)


@pytest.mark.slow
def test_halving_mask_density_at_step_10_is_charged_the_lower_cost_from_step_10(dense):
    module = _module(ShrinkingMaskLearner)
    meter = _train(module, 14)
    per_step = meter.task.train / 14
    convs = [m for n, m in module.backbone.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("layer")]
    assert all(c.weight_mask.mean() == pytest.approx(0.5, abs=0.02) for c in convs)
    sparse = meter.last_train_cost.measure("algorithmic")
    assert sparse < 0.8 * dense.measure("algorithmic")
    assert meter.task.train == pytest.approx(10 * dense.measure("algorithmic") + 4 * sparse)
    assert meter.task.executed_train == pytest.approx(14 * dense.measure("executed"))
    assert per_step < dense.measure("algorithmic")


def test_a_cheap_first_step_is_not_the_price_of_later_steps(dense):
    meter = _train(_module(CheapFirstStepLearner), 6)
    head_only = meter.task.train - 5 * dense.measure("algorithmic")
    assert 0 < head_only < 0.01 * dense.measure("algorithmic")  # step 0: the head alone
    assert meter.counted_steps == 3  # steps 0, 1 differ; 1 and 2 agree; 3-5 from the cache


def test_a_stable_step_is_counted_twice_then_audited(dense):
    meter = FlopMeter(audit_every=4)
    _train(_module(Learner), 9, meter)
    assert meter.counted_steps == 3  # steps 0 and 1, then the audit at step 5 (after 3 cached)
    assert meter.task.train == pytest.approx(9 * dense.measure("algorithmic"))


# -- op-exact masks on tiny nets ---------------------------------------------------------------------
def _count(model: nn.Module, x: torch.Tensor) -> StepFlops:
    with StepCounter(model) as counter:
        model(x).sum().backward()
    return counter.totals()


def test_a_masked_linear_is_discounted_in_forward_grad_input_and_grad_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 8))
    mask = torch.zeros(16, 32)
    mask[:, :8] = 1  # density 1/4
    prune.custom_from_mask(model[0], "weight", mask)
    x = torch.randn(5, 32, requires_grad=True)
    step = _count(model, x)
    first, second = 2 * 5 * 32 * 16, 2 * 5 * 16 * 8
    assert step.forward == first + second and step.backward == 2 * (first + second)
    assert step.algo_forward == pytest.approx(first / 4 + second)
    assert step.algo_backward == pytest.approx(2 * first / 4 + 2 * second)


def test_a_masked_weight_used_under_bf16_autocast_is_still_discounted():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    prune.custom_from_mask(conv, "weight", (torch.arange(conv.weight.numel()) % 2).view_as(conv.weight).float())
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = _count(conv, x)
    assert step.algo_forward == pytest.approx(step.forward / 2)
    assert step.algo_backward == pytest.approx(step.backward / 2)


def test_a_mask_covers_only_the_ops_that_use_its_weight():
    """A masked layer whose module also runs an unmasked layer: only the masked op is discounted."""

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 4))
            self.register_buffer("weight_mask", torch.zeros(4, 4))
            self.other = nn.Linear(4, 4, bias=False)

        def forward(self, x):
            return self.other(x) + x @ self.weight.t()

    model = Both()
    step = _count(model, torch.randn(3, 4))
    one = 2 * 3 * 4 * 4
    assert step.forward == 2 * one
    assert step.algo_forward == one  # the zero-density matmul costs 0, the other one in full


class _WarmsUp(nn.Module):
    """An eval forward whose cost changes after its first call (a cached count of call 1 would
    undercharge every later batch), and again after `swap()` replaces a layer with a wider one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = x.float().flatten(1)[:, :12]
        for _ in range(1 if self.calls == 1 else 3):
            out = self.fc(h)
        return out

    def swap(self) -> None:
        self.fc = nn.Linear(12, 10)
        self.fc.weight = nn.Parameter(torch.zeros(10, 12))
        self.extra = nn.Linear(10, 10)  # a new parameter: a new structure signature


def test_evaluation_counts_are_keyed_by_structure_and_settle_before_being_cached():
    from nevisbench.run.task.evaluation import evaluate

    x = torch.randint(0, 255, (40, 3, 4, 4), dtype=torch.uint8)
    loader = BatchLoader(Split(x, torch.arange(40) % 10), batch_size=4, image_size=4, train=False, augment=False)
    one_fc = 2 * 12 * 10  # FLOPs per sample of one pass of the linear layer
    meter = FlopMeter()
    module = _WarmsUp()
    evaluate(module, loader, meter, num_classes=10)
    # batch 1: one pass; batches 2..10: three passes each (a cache of batch 1 would charge 10 x one pass)
    assert meter.task.eval == pytest.approx(4 * one_fc * (1 + 9 * 3))
    module.swap()
    before = meter.task.eval
    evaluate(module, loader, meter, num_classes=10)
    assert meter.task.eval - before == pytest.approx(40 * 3 * one_fc)  # still three passes, counted anew


# -- tricks that hide one extra training pass per step (tests/helpers/cheating_learners.py), through the runner ---
STEPS = 4


def _task_line(monkeypatch, tmp_path, target: str, *extra: str) -> dict:
    """The results line of a 1-task TINY run of plugin `target` (a third-party plugin: meter.count=auto
    counts its every step), without milestones."""
    import json

    from conftest import TINY, register_learner

    from nevisbench.run.runner import run

    cheating_learners.DONE["extra"] = 0
    register_learner(monkeypatch, "cheat", f"cheating_learners:{target}")
    out = tmp_path / target
    cfg = compose([*TINY, "learner=cheat", "stream.tasks=[faces]", f"train.max_steps={STEPS}",
                   "budget.milestones=0", f"out_dir={out}", *extra])
    run_dir = run(cfg)
    return json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def honest_line(tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _task_line(monkeypatch, tmp_path_factory.mktemp("honest"), "HonestPlugin")


@pytest.mark.slow
@pytest.mark.parametrize("trick", [
    "ThreadLearner", "ConfigureOptimizersLearner", "OnTrainEndLearner", "OnFitEndLearner", "EndTaskLearner",
    # of our own invention
    "TeardownLearner", "StateDictLearner", "PersistentThreadLearner", "EvalSwitchLearner",
])
def test_an_extra_pass_per_step_hidden_outside_the_step_is_charged(monkeypatch, tmp_path, honest_line, trick):
    line = _task_line(monkeypatch, tmp_path, trick)
    extra = cheating_learners.DONE["extra"]
    assert extra >= STEPS  # the trick really did (at least) one extra pass per step
    honest = honest_line["flops"]["executed"]
    charged = line["flops"]["executed"]["train"] / honest["train"]
    done = 1 + extra / STEPS  # an extra pass costs what a finetuning step does
    assert charged == pytest.approx(done, rel=0.02), f"{trick}: charged {charged:.2f}x, did {done:.2f}x"


@pytest.mark.slow
def test_a_learner_that_works_only_when_uncounted_is_charged_what_it_did(monkeypatch, tmp_path, honest_line):
    line = _task_line(monkeypatch, tmp_path, "CountDetectingLearner")
    honest = honest_line["flops"]["executed"]["train"]
    done = 1 + cheating_learners.DONE["extra"] / STEPS  # every step counted: it never sees an uncounted one
    assert line["flops"]["executed"]["train"] / honest == pytest.approx(done, rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("trick", ["EvalTrainingLearner", "EvalWeightWriteLearner"])
def test_training_work_inside_evaluation_is_charged_to_training_and_flagged(monkeypatch, tmp_path, honest_line, trick):
    line = _task_line(monkeypatch, tmp_path, trick)
    assert cheating_learners.DONE["extra"] > 0
    moved = line["flops"]["moved_from_eval"]
    assert moved > 0
    assert line["flops"]["executed"]["train"] == pytest.approx(honest_line["flops"]["executed"]["train"] + moved, rel=1e-6)
    assert line["flops"]["train"] > 1.5 * honest_line["flops"]["train"]


def test_meter_options_are_config_keys_with_one_line_errors():
    from nevisbench.compute.flops import meter_options
    from nevisbench.errors import ConfigError

    plugin = cheating_learners.HonestPlugin
    assert meter_options(compose([]).meter, plugin) == (True, 1)  # a third-party plugin: every step
    from nevisbench.learners.finetune import FinetuneLearner

    assert meter_options(compose([]).meter, FinetuneLearner) == (False, 32)
    assert meter_options(compose(["meter.count=every_step"]).meter, FinetuneLearner) == (True, 1)
    assert meter_options(compose(["meter.count=cached", "meter.audit_every=4"]).meter, plugin) == (False, 4)
    with pytest.raises(ConfigError, match=r"Unknown value for 'meter.count': 'strict'. Valid: auto, cached, every_step"):
        compose(["meter.count=strict"])
    with pytest.raises(ConfigError, match=r"Invalid value for 'meter.audit_every': 0; it must be >= 1"):
        compose(["meter.audit_every=0"])
