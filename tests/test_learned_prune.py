"""learned_prune: hard-concrete gates, the FLOP model against the meter, compaction (function kept,
FLOPs at the target), transfer of structure along the stream, and resume after a kill mid-task."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
from conftest import without_timing
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from nevisbench.api.learner import LearnerContext, TaskInfo, clone_module
from nevisbench.compute.flops import StepCounter
from nevisbench.config import compose
from nevisbench.errors import ConfigError
from nevisbench.learners import _gates
from nevisbench.learners.learned_prune import TRANSFER_MODES, LearnedPruneConfig, LearnedPruneLearner, _features
from nevisbench.run.runner import run

TASK = TaskInfo("t", "t", 0, "object", 5)
SIZE = 16
DEMO = ["stream=demo", "stream.tasks=[faces,shapes]", f"data.image_size={SIZE}", "data.batch_size=16", "trainer=cpu",
        "trainer.progress_bar=false", "budget.milestones=1", "learner=learned_prune"]


def _learner(*overrides: str) -> LearnedPruneLearner:
    cfg = compose(["learner=learned_prune", *overrides])
    learner = LearnedPruneLearner(OmegaConf.to_object(cfg.learner),
                                  LearnerContext("transfer", 0, SIZE, cfg.train, feature_dim=512))
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    learner.prepare(net)
    return learner


def _step_flops(module, batch: int = 4) -> float:
    """Algorithmic FLOPs per image of one training step (forward + backward) of `module`."""
    x, y = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)), torch.arange(batch) % module.task.num_classes
    module.train()
    with StepCounter(module) as counter:
        module.loss_fn(module(x), y).backward()
    module.zero_grad(set_to_none=True)
    return counter.totals().measure("algorithmic") / batch


# -- gates ---------------------------------------------------------------------------------------
def test_hard_concrete_gates_follow_cofi():
    g = torch.Generator().manual_seed(0)
    # P(z > 0) at log_alpha = 0 is sigmoid(T * log(r / -l)) = sigmoid(2/3 * ln 11)
    assert float(_gates.prob_open(torch.zeros(1))) == pytest.approx(1 / (1 + 11 ** (-2 / 3)))
    z = _gates.sample(torch.zeros(20000), g)
    assert z.min() == 0 and z.max() == 1 and 0.05 < (z == 0).float().mean() < 0.3  # exact zeros and ones
    assert float((z > 0).float().mean()) == pytest.approx(float(_gates.prob_open(torch.zeros(1))), abs=0.02)
    alpha = torch.tensor([3.0, -3.0, 2.0, -2.0, 0.5])
    det = _gates.deterministic(alpha)
    keep = round(float(_gates.prob_open(alpha).sum()))
    assert int((det > 0).sum()) == keep and set(det.nonzero().flatten().tolist()) == set(alpha.topk(keep).indices.tolist())
    gates = _gates.GateSet({"a": (4,)}, {"a": 0.5}, g)
    with torch.no_grad():
        gates.log_alpha["a"].fill_(50.0)
    gates.clamp_()
    assert float(gates.log_alpha["a"].detach().max()) == pytest.approx(math.log(100))


def test_bad_options_name_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="learner.transfer.*masks_weights"):
        LearnedPruneConfig(transfer="mask_weights").validate()
    with pytest.raises(ConfigError, match="learner.granularity"):
        LearnedPruneConfig(granularity="filter").validate()
    with pytest.raises(ConfigError, match="learner.prune_fraction"):
        LearnedPruneConfig(prune_fraction=0).validate()


# -- FLOPs and compaction -------------------------------------------------------------------------
def test_flop_model_equals_the_meter_on_the_dense_network():
    learner = _learner()
    module = learner.begin_task(TASK, clone_module(learner._pretrained))
    module.phase = "finetune"  # plain forward: the dense network, no gates
    assert _step_flops(module) == pytest.approx(module.flops.dense, rel=1e-9)


@pytest.mark.parametrize("granularity", ["channel", "kernel"])
def test_compaction_keeps_the_function_and_half_the_counted_flops(granularity):
    learner = _learner(f"learner.granularity={granularity}")
    module = learner.begin_task(TASK, clone_module(learner._pretrained))
    dense_flops = module.flops.dense  # equal to the meter's count (test above)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, alpha in module.gates.log_alpha.items():
            alpha.copy_(torch.full(alpha.shape, 4.0) if name.endswith("_block") else torch.randn(alpha.shape, generator=g) * 2)
        module.gates.log_alpha["layer3_1_block"].fill_(-5.0)  # this residual branch closes
    module.backbone.eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=g)
    z, _ = module.calibrated(module.gates)
    with torch.no_grad():
        gated = _features(module.backbone, x, z)[0]
    module._compact_now(rebuild_optimizer=False)
    assert module.record["removed_blocks"] == ["layer3.1"]
    assert module.record["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert module.record["kept_channels"]["layer1.0"][0] < 64
    module.backbone.eval()
    with torch.no_grad():
        assert torch.allclose(module.backbone(x), gated, atol=1e-4)  # compaction folds the gates exactly
    ratio = _step_flops(module) / dense_flops
    assert 0.48 <= ratio <= 0.52
    assert ratio == pytest.approx(1 - module.record["achieved_sparsity"], rel=1e-6)  # the model is what the meter counts
    if granularity == "kernel":
        assert 0 < min(module.record["kernel_density"].values()) < 1
    # back to the dense shape (what the continual scenario carries): with the kept units as 0/1
    # gates it is the compacted network again
    compacted = module.backbone
    dense = module.decompact().eval()
    assert all(a.shape == b.shape for a, b in zip(dense.state_dict().values(), learner._pretrained.state_dict().values()))
    with torch.no_grad():
        binary = _features(dense, x, {n: (v != 0).float() for n, v in z.items()})[0]
        assert torch.allclose(binary, compacted.eval()(x), atol=1e-4)


# -- real runs on the demo stream -------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Real runs on [faces, shapes]: per task, the structure record and the compacted network's
    training FLOPs per image counted by the meter's StepCounter, relative to dense."""
    seen: list[tuple[dict, float]] = []
    original = LearnedPruneLearner.end_task

    def end_task(self, task, module):
        ratio = _step_flops(module) / module.flops.dense  # measured before end_task restores the dense shape
        original(self, task, module)
        seen.append((self.history[-1], ratio))

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LearnedPruneLearner, "end_task", end_task)
        for name, extra in {"none": ["train.max_steps=60"], "masks_weights": ["train.max_steps=30", "learner.transfer=masks_weights"],
                            "multi": ["train.max_steps=2", "learner.transfer=multi"],
                            "delta0": ["train.max_steps=2", "learner.transfer=delta", "learner.delta_penalty=0"],
                            "delta_tied": ["train.max_steps=2", "learner.transfer=delta", "learner.delta_penalty=1e9"]}.items():
            seen.clear()
            out = tmp_path_factory.mktemp(name)
            run_dir = run(compose([*DEMO, *extra, f"out_dir={out}"]))
            lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
            runs[name] = {"records": [r for r, _ in seen], "ratios": [c for _, c in seen], "lines": lines}
    return runs


def test_every_task_costs_half_of_dense_after_compaction_and_learns(demo_runs):
    chance = {"faces": 0.5, "shapes": 0.8}  # 2 and 5 classes
    for name in ("none", "masks_weights"):
        got = demo_runs[name]
        assert all(0.48 <= r <= 0.52 for r in got["ratios"]), (name, got["ratios"])
    for line in demo_runs["none"]["lines"]:
        assert line["test_error"] < chance[line["task"]], (line["task"], line["test_error"])
    for line, record in zip(demo_runs["masks_weights"]["lines"], demo_runs["masks_weights"]["records"]):
        report = line["learner_report"]  # the structure learned on the task, in its results line
        assert report["achieved_sparsity"] == pytest.approx(record["achieved_sparsity"]) and "overlap_prev" in report


def test_transferred_masks_overlap_more_than_fresh_ones(demo_runs):
    fresh = demo_runs["none"]["records"][1]["overlap_prev"]
    carried = demo_runs["masks_weights"]["records"][1]["overlap_prev"]
    assert carried > fresh + 0.3, (carried, fresh)


def test_delta_ties_the_task_masks_and_without_penalty_is_multi(demo_runs):
    def structure(name):
        return [{k: v for k, v in r.items()} for r in demo_runs[name]["records"]]

    assert structure("delta0") == structure("multi")
    assert [l["test_error"] for l in demo_runs["delta0"]["lines"]] == [l["test_error"] for l in demo_runs["multi"]["lines"]]
    assert demo_runs["delta_tied"]["records"][1]["joint_overlap"] == 1.0
    assert demo_runs["multi"]["records"][1]["joint_overlap"] < 1.0


# -- every mode, both scenarios, killed mid-task and resumed ---------------------------------------------
# 6 steps: compaction at the end of step 3; the plan is re-planned at the end of step 5 (after the
# first fully counted compacted step; the meter's last counted cost travels with the checkpoints).
RESUMABLE = [*DEMO, "train.max_steps=6", "train.checkpoint_every_n_steps=1", "run_name=r"]




def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NEVISBENCH_FAULT"}
    if fault:
        env["NEVISBENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "nevisbench", "run", *args], capture_output=True, text=True, env=env, timeout=600)


def test_sigkill_at_the_compaction_step_and_after_it_then_resume_equals_uninterrupted(tmp_path):
    config = [*RESUMABLE, "scenario=continual", "learner.transfer=delta", "learner.granularity=kernel"]
    reference = json.loads((run(compose([*config, f"out_dir={tmp_path / 'ref'}"])) / "summary.json").read_text())
    run_dir = tmp_path / "r"
    # step 3 is the compaction boundary: its checkpoint is written just before the compaction runs
    assert _cli(*config, f"out_dir={tmp_path}", fault="step:1:3").returncode == -signal.SIGKILL
    assert _cli(f"resume={run_dir}", fault="step:1:5").returncode == -signal.SIGKILL  # compacted checkpoint
    done = _cli(f"resume={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert without_timing(json.loads((run_dir / "summary.json").read_text())) == without_timing(reference)


class _Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing after the crash point runs."""


@pytest.mark.slow  # 14 modes x scenarios, 2 runs each; the SIGKILL test above covers one of them
@pytest.mark.parametrize("scenario", ["transfer", "continual"])
@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_every_mode_runs_and_resumes_mid_task(mode, scenario, tmp_path, monkeypatch):
    config = [*RESUMABLE, f"scenario={scenario}", f"learner.transfer={mode}"]
    reference = json.loads((run(compose([*config, f"out_dir={tmp_path / 'ref'}"])) / "summary.json").read_text())

    def crash(point):
        if point == "step:1:5":
            raise _Killed(point)

    monkeypatch.setattr("nevisbench.run.callbacks.crash_point", crash)
    with pytest.raises(_Killed):
        run(compose([*config, f"out_dir={tmp_path}"]))
    monkeypatch.undo()
    run(compose([*config, f"resume={tmp_path / 'r'}"]))
    assert without_timing(json.loads((tmp_path / "r" / "summary.json").read_text())) == without_timing(reference)


# the kit per transfer path: carried gates and weights, replayed batches, per-task gate offsets (the
# other modes are variants of these; every mode's determinism and resume are checked above)
@pytest.mark.parametrize("mode", ["masks_weights", "single", "delta"])
def test_conformance_kit(tmp_path, mode):
    from nevisbench.testing import check_learner

    check_learner("learned_prune", tmp_path, steps=2, overrides=[f"learner.transfer={mode}"])


def test_learner_state_survives_a_safe_reload(tmp_path):
    learner = _learner("learner.transfer=single")
    module = learner.begin_task(TASK, clone_module(learner._pretrained))
    module._remember(torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 1]))
    module._compact_now(rebuild_optimizer=False)
    learner.end_task(TASK, module)
    torch.save(learner.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    fresh = _learner("learner.transfer=single")
    fresh.load_state_dict(state)
    assert fresh.history == learner.history
    nxt = fresh.begin_task(TaskInfo("u", "u", 1, "object", 3), clone_module(fresh._pretrained))
    assert nxt.replay and nxt.carried_gates and nxt.replay_head.out_features == 5


def test_the_prune_phase_is_charged_densely_and_replayed_batches_are_charged(tmp_path):
    """Charging, read from the results lines: while gates learn, the network runs (and is charged)
    densely; compaction lowers the per-step cost; replaying task t-1's batches costs extra."""
    def lines(*extra: str) -> list[dict]:
        run_dir = run(compose([*DEMO, "train.max_steps=4", "budget.milestones=0", f"out_dir={tmp_path}", *extra]))
        return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]

    dense = lines("learner=finetune", "run_name=dense")
    pruning_only = lines("learner.prune_fraction=1.0", "run_name=prune_only")
    half = lines("run_name=half")
    single = lines("learner.transfer=single", "run_name=single")
    for d, p, h in zip(dense, pruning_only, half):
        # 4 steps: prune_fraction=1.0 compacts before the last step (3 gated + 1 compacted), the
        # default 0.5 after step 2 (2 + 2). If every gated step costs a dense step c and every
        # compacted step x, then p = 3c + x and h = 2c + 2x, with c from the finetune run.
        c = d["flops"]["executed"]["train"] / 4
        x = p["flops"]["executed"]["train"] - 3 * c
        assert h["flops"]["executed"]["train"] == pytest.approx(2 * c + 2 * x, rel=1e-6)
        assert 0.45 * c < x < 0.55 * c  # the compacted step: half of dense
    # task 2 of `single` trains on its batches and replayed batches of task 1: more compute per step
    assert single[1]["flops"]["train"] > 1.3 * half[1]["flops"]["train"]
