"""`trainer.compile=true`: the counted FLOPs equal an eager run's exactly (train and eval), every
step but the counted ones runs the compiled graph, and compile time is reported on its own.

Compiling is slow on a CPU (inductor's C++ build: about a minute for ResNet18), so one run per
configuration is shared by several assertions; the learner matrix compiles with Dynamo's
`aot_eager` backend (the same Dynamo frames, guards and recompiles, without code generation):
the counted steps never reach any backend (they run under the counter's force_eager stance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nevisbench.compute import guard
from nevisbench.compute.flops import FlopMeter, StepCounter
from nevisbench.config import compose
from nevisbench.run.runner import run
from nevisbench.run.task import compiling


def _run(out: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> dict:
    """One run on digits: its results line, the compile statistics and the steps the meter counted."""
    meters = []
    original = FlopMeter.watch

    def spy(self):  # the run's meter, kept to read its count; a spy inside the charging path would be refused
        meters.append(self)  # as a learner writing the meter (guard.write judges the first frame outside it)
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(FlopMeter, "watch", spy)
        patch.setattr(guard, "_PROTECTED", [])  # the spy replaces a meter method: the tamper check would refuse it
        compiling.reset_stats()
        folder = run(compose([*overrides, f"out_dir={out}", "stream.tasks=[digits]", "trainer=cpu",
                              "trainer.progress_bar=false"]))
    line = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
    return {"line": line, "stats": compiling.stats(), "counted": meters[0].counted_steps}  # one task: its counted steps


def _same_counts(eager: dict, compiled: dict) -> None:
    for key in ("train", "eval", "train_forward", "train_backward", "executed"):
        assert compiled["line"]["flops"][key] == eager["line"]["flops"][key], key
    assert compiled["line"]["steps"] == eager["line"]["steps"]


def _every_uncounted_step_compiled(result: dict) -> None:
    stats = result["stats"]
    assert stats["compiled_steps"] + stats["eager_steps"] == result["line"]["steps"]
    assert stats["eager_steps"] == result["counted"]  # the counted steps, and only they, ran eagerly
    assert stats["compiled_steps"] > 0


@pytest.fixture(scope="module")
def digits_finetune(tmp_path_factory):
    """finetune on digits, 20 steps at the default settings, eager and compiled with inductor."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        runs = {name: _run(tmp_path_factory.mktemp(name), monkeypatch, "train.max_steps=20", "data.eval_batch_size=32", *extra)
                for name, extra in (("eager", []), ("compiled", ["trainer.compile=true"]))}
    finally:
        monkeypatch.undo()
    return runs


@pytest.mark.slow
def test_compiled_finetune_counts_the_eager_flops_exactly(digits_finetune):
    eager, compiled = digits_finetune["eager"], digits_finetune["compiled"]
    _same_counts(eager, compiled)
    assert f"{eager['line']['flops']['train']:.4g}" == "2.781e+11"  # the measurement (train FLOPs), pinned


@pytest.mark.slow
def test_compiled_run_compiles_all_but_the_counted_steps_and_reports_compile_time(digits_finetune):
    eager, compiled = digits_finetune["eager"], digits_finetune["compiled"]
    _every_uncounted_step_compiled(compiled)
    assert compiled["stats"]["graph_calls"] > compiled["stats"]["compiled_steps"]  # evaluation ran compiled too
    seconds = compiled["line"]["flops"]["seconds"]
    assert seconds["compile"] > 0 and eager["line"]["flops"]["seconds"]["compile"] == 0
    assert seconds["compile"] == pytest.approx(compiled["stats"]["compile_seconds"], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["ft_block_2to3", "weight_prune"])
def test_frozen_and_pruned_learners_count_the_same_compiled(learner, tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")
    settings = [*tiny, "train.max_steps=8", f"learner={learner}", "budget.milestones=2"]
    eager = _run(tmp_path / "eager", monkeypatch, *settings)
    compiled = _run(tmp_path / "compiled", monkeypatch, *settings, "trainer.compile=true")
    _same_counts(eager, compiled)
    _every_uncounted_step_compiled(compiled)


@pytest.mark.slow
def test_learned_prune_counts_the_same_compiled_and_says_its_training_ran_eagerly(tmp_path, monkeypatch, tiny):
    # learned_prune compacts its network half-way (new parameter shapes: the meter counts the new
    # structure again, Dynamo recompiles the evaluation forward). Its training_step runs its gated
    # blocks itself, not the compiled forward: its training steps run eagerly, and the run says so.
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")
    settings = [*tiny, "train.max_steps=8", "learner=learned_prune", "budget.milestones=2", "data.eval_batch_size=32"]
    eager = _run(tmp_path / "eager", monkeypatch, *settings)
    with pytest.warns(UserWarning, match="none of the 8 training steps ran compiled"):
        compiled = _run(tmp_path / "compiled", monkeypatch, *settings, "trainer.compile=true")
    _same_counts(eager, compiled)
    assert compiled["counted"] >= 4  # counted until stable before the compaction, and again after it
    assert compiled["stats"]["compiled_steps"] == 0 and compiled["stats"]["graph_calls"] > 0  # evaluation compiled


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)


def test_a_frame_first_run_under_the_counter_is_compiled_later_not_skipped(monkeypatch):
    # Dynamo marks a frame to skip when it cannot trace it; under the counter's force_eager stance
    # it must not look at the frame at all, so the next uncounted call compiles it
    monkeypatch.setattr(compiling, "BACKEND", "eager")
    torch._dynamo.reset()
    module = compiling.compile_module(_Mlp())
    x = torch.randn(4, 8)
    with StepCounter(module) as counter:
        module(x).sum().backward()
    calls = compiling.graph_calls()
    plain = _Mlp()  # the same network, never compiled
    with StepCounter(plain) as reference:
        plain(x).sum().backward()
    assert counter.totals() == reference.totals() and counter.totals().forward == 2 * 4 * (8 * 16 + 16 * 4)
    assert compiling.graph_calls() == calls  # the counted call ran eagerly
    module(x).sum().backward()
    module(x).sum().backward()
    assert compiling.graph_calls() == calls + 2  # then every uncounted call runs the compiled graph
