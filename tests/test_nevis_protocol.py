"""protocol=nevis as dm_nevis's finetuning learner (experiments_jax, finetuning_dknn): the per-task
batch size rule, 7 epochs of warmup then cosine to 1e-8, SGD with Nesterov momentum and weight decay
on conv/linear weights only, validation every n steps with the earlier model kept on ties, and
search draws seeded with the task index alone. protocol=fast (the demo) keeps its settings."""

from __future__ import annotations

import contextlib
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from torch import nn

from nevisbench.api.module import TaskModule
from nevisbench.api.types import TaskInfo
from nevisbench.config import compose
from nevisbench.errors import ConfigError
from nevisbench.run.runner import run
from nevisbench.run.search.study import TaskSearch
from nevisbench.run.task.plan import nevis_batch_size, nevis_epoch_steps
from nevisbench.run.task.selection import BestDevSelection, LinearValidation

TASK = TaskInfo(key="t", name="t", index=0, domain="object", num_classes=3, multi_label=False)


def _dm_nevis_batch(n: int) -> int:  # dm_nevis: min(max, max(16, int(2**int(np.log2(proportion * size)))))
    return min(512, max(16, int(2 ** int(math.log2(0.0025 * n)))))


@pytest.mark.parametrize("n", [1, 399, 400, 6399, 6400, 6401, 12_800, 50_000, 102_399, 204_800, 10**6, 7_777])
def test_the_batch_size_is_dm_nevis_rule(n):
    assert nevis_batch_size(n) == _dm_nevis_batch(n)
    assert nevis_batch_size(n) in (16, 32, 64, 128, 256, 512)
    assert nevis_epoch_steps(n, nevis_batch_size(n)) == n // nevis_batch_size(n) + 1


def test_the_nevis_protocol_sets_dm_nevis_optimization_and_fast_keeps_the_demo():
    nevis = compose(["protocol=nevis"])
    assert nevis.protocol.batch_size == "nevis_rule" and nevis.protocol.validate_every_n_steps == 1000
    t = nevis.train
    assert (t.optimizer, t.momentum, t.nesterov, t.weight_decay, t.decay_norm_and_bias) == ("sgd", 0.9, True, 1e-4, False)
    assert (t.schedule, t.warmup_epochs, t.final_lr) == ("cosine", 7, 1e-8)
    fast = compose([])
    assert fast.protocol.batch_size == "fixed" and fast.protocol.validate_every_n_steps == 0
    t = fast.train
    assert (t.nesterov, t.decay_norm_and_bias, t.warmup_epochs, t.final_lr, t.warmup_steps) == (False, True, 0, 0.0, 0)
    assert compose(["stream=short"]).protocol.batch_size == "nevis_rule"


def _module(cfg, backbone: nn.Module | None = None) -> TaskModule:
    backbone = backbone or nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(4))
    return TaskModule(backbone, nn.Linear(4, 3), task=TASK, train=cfg.train)


def _rates(cfg, *, planned: int, per_epoch: int) -> list[float]:
    """The rate of every step 0..planned, read from the scheduler the module configures."""
    module = _module(cfg)
    module.nevisbench_plan = SimpleNamespace(steps=planned, epoch_steps=per_epoch)  # as the harness hands it over
    module._trainer = SimpleNamespace(lightning_module=module, max_steps=-1)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(planned + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        assert all(g["lr"] == rates[-1] for g in optimizer.param_groups)  # every group follows the same schedule
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("planned, per_epoch", [(200, 20), (100, 3), (13, 5), (1000, 1)])
def test_the_lr_warms_up_for_7_epochs_then_decays_by_cosine_to_1e_8(planned, per_epoch):
    cfg = compose(["protocol=nevis", "train.lr=0.1"])
    rates = _rates(cfg, planned=planned, per_epoch=per_epoch)
    warmup = min(planned - 1, 7 * per_epoch)
    assert rates[0] == 0.0  # optax's warmup_cosine_decay_schedule(init_value=0): step 0 updates with rate 0
    for step in range(warmup):  # linear warmup
        assert math.isclose(rates[step], 0.1 * step / warmup, rel_tol=1e-9)
    assert math.isclose(rates[warmup], 0.1, rel_tol=1e-9)  # the peak, then cosine down
    assert all(a > b for a, b in zip(rates[warmup:planned], rates[warmup + 1:planned + 1], strict=False))
    for step in range(warmup, planned + 1):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (planned - warmup)))
        assert math.isclose(rates[step], 1e-8 + (0.1 - 1e-8) * cosine, rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(rates[planned], 1e-8, rel_tol=1e-6) and rates[planned - 1] > 1e-8


def test_fast_keeps_no_warmup_and_a_cosine_to_zero():
    rates = _rates(compose(["train.lr=0.1"]), planned=10, per_epoch=3)
    assert rates[0] == 0.1 and rates[10] == 0.0


def test_biases_and_norms_get_no_weight_decay_under_nevis():
    module = _module(compose(["protocol=nevis"]))
    optimizer = module.configure_optimizers()["optimizer"]
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)
    conv, head = module.backbone[0], module.head  # the BatchNorm layers (backbone[1], [5]) and biases: no decay
    assert decayed == {id(conv.weight), id(head.weight)}
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(p.numel() for p in module.parameters())
    # protocol=fast: coupled decay on every parameter, plain momentum (unchanged)
    optimizer = _module(compose([])).configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert not optimizer.param_groups[0]["nesterov"]


def test_a_learners_param_groups_are_split_and_keep_their_own_settings():
    cfg = compose(["protocol=nevis", "train.lr=0.1"])
    module = _module(cfg)
    groups = [{"params": list(module.backbone.parameters())}, {"params": module.head.weight, "lr": 0.5},
              {"params": [module.head.bias], "lr": 0.5}]
    optimizer = module.optimization(groups)["optimizer"]
    # group i is still (part of) the learner's group i: a learner may read its groups by index
    assert [g["lr"] for g in optimizer.param_groups[:3]] == [0.1, 0.5, 0.5]
    assert optimizer.param_groups[1]["params"] == [module.head.weight]
    assert optimizer.param_groups[2]["params"] == [module.head.bias]
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_id[id(module.head.weight)]["lr"] == 0.5 and by_id[id(module.head.weight)]["weight_decay"] == 1e-4
    assert by_id[id(module.head.bias)]["weight_decay"] == 0.0
    assert by_id[id(module.backbone[1].weight)]["weight_decay"] == 0.0  # BatchNorm's scale
    assert by_id[id(module.backbone[0].weight)]["weight_decay"] == 1e-4


def test_two_steps_match_a_hand_computed_nesterov_sgd_with_masked_coupled_decay():
    """dm_nevis's sgdw: g' = g + wd * w (weights only), t = m * t + g', update = -lr * (g' + m * t)."""
    torch.manual_seed(0)
    lr, m, wd = 0.1, 0.9, 0.01
    cfg = compose(["protocol=nevis", f"train.lr={lr}", f"train.weight_decay={wd}", "train.schedule=constant",
                   "train.warmup_epochs=0"])
    module = _module(cfg, nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    module._trainer = None
    optimizer = module.configure_optimizers()["optimizer"]
    params = dict(module.named_parameters())
    start = {k: v.detach().clone() for k, v in params.items()}
    grads = [{k: torch.randn_like(v) for k, v in params.items()} for _ in range(2)]
    expect, trace = {k: v.clone() for k, v in start.items()}, {k: torch.zeros_like(v) for k, v in start.items()}
    for g in grads:
        for k in params:
            decayed = k.endswith("weight") and not k.startswith("backbone.1")  # Linear weights, not LayerNorm's
            gk = g[k] + (wd * expect[k] if decayed else 0)
            trace[k] = m * trace[k] + gk
            expect[k] = expect[k] - lr * (gk + m * trace[k])
        for k, p in params.items():
            p.grad = g[k].clone()
        optimizer.step()
    for k, p in params.items():
        torch.testing.assert_close(p.detach(), expect[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(params["backbone.0.weight"].detach(), start["backbone.0.weight"])


class _Meter:
    def paused(self):
        return contextlib.nullcontext()


def test_linear_validation_runs_at_steps_0_n_2n_and_after_the_last():
    steps = []
    trainer = SimpleNamespace(global_step=0)
    callback = LinearValidation(4, lambda: steps.append(trainer.global_step) or 0.5, _Meter())
    for done in range(1, 11):  # 10 optimizer steps: global_step counts the steps done
        trainer.global_step = done
        callback.on_train_batch_end(trainer, None, None, None, done - 1)
    callback.on_train_end(trainer, None)
    assert steps == [1, 5, 9, 10] and callback.final_error == 0.5  # after steps 0, 4, 8 (0-based) and the last


def test_best_dev_selection_keeps_the_earlier_model_on_ties():
    selection, module = BestDevSelection(enabled=True), nn.Linear(2, 2)
    for step, error in ((1, 0.5), (3, 0.4), (5, 0.4), (7, 0.45)):
        selection.consider(module, error, step)
    assert (selection.step, selection.error) == (3, 0.4)


@pytest.mark.slow
@pytest.mark.parametrize("search", ["nevis", "nevis_cheap"])
def test_search_draws_for_a_task_are_the_same_under_every_run_seed(search, tmp_path):
    def draws(seed: int, index: int, *extra: str) -> list[dict]:
        box = TaskSearch(compose([f"search={search}", f"seed={seed}", *extra]), index, tmp_path)
        return [box.ask() for _ in range(box.trials)]

    for index in (0, 3):
        assert draws(0, index) == draws(1, index) == draws(12345, index)
    if search == "nevis":
        assert draws(0, 0) != draws(0, 1)  # seeded with the task index: each task draws its own
        assert draws(0, 1, "search.seed_with_run_seed=true") != draws(1, 1, "search.seed_with_run_seed=true")
        assert draws(1, 0, "search.seed_with_run_seed=true") == draws(0, 1)  # the old rule: seed + task index


@pytest.mark.parametrize("override, message", [
    ("protocol.batch_size=huge", "protocol.batch_size"),
    ("protocol.validate_every_n_steps=-1", "protocol.validate_every_n_steps"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("train.final_lr=0.5", "train.final_lr"),
])
def test_bad_nevis_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        compose(["protocol=nevis", "train.lr=0.1", override])
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_nevis_run_uses_the_tasks_batch_size_warmup_and_linear_validation(tmp_path):
    cfg = compose([*TINY, "data.batch_size=64", "stream.tasks=[digits]", "protocol=nevis", "train.max_steps=5", "budget.milestones=2",
                   "protocol.validate_every_n_steps=2", "train.lr=0.1", f"out_dir={tmp_path}", "run_name=n"])
    (line,) = [json.loads(x) for x in (run(cfg) / "results.jsonl").read_text().splitlines()]
    batch = _dm_nevis_batch(line["num_train"])
    opt = line["optimization"]
    assert opt["batch_size"] == batch != 64 and opt["batch_rule"] == "nevis_rule"  # the rule, not data.batch_size
    assert opt["epoch_steps"] == line["num_train"] // batch + 1 and opt["warmup_steps"] == min(4, 7 * opt["epoch_steps"])
    assert opt["nesterov"] and opt["weight_decay_on"] == "conv_and_linear_weights" and opt["final_lr"] == 1e-8
    # the LR trace at the milestones: warmup until the last step, which ends the cosine at 1e-8
    trace = {r["step"]: r["lr"] for r in line["anytime"]}
    assert math.isclose(trace[5], 1e-8, rel_tol=1e-6)
    assert line["selected"]["rule"] == "best_dev" and line["selected"]["step"] in (1, 3, 5)
    # the results line's dev_error is the last validation's (dm_nevis's trial cost); the scored model the best one
    assert line["dev_error"] == line["anytime"][-1]["dev_error"] >= line["selected"]["dev_error"]


def test_the_docs_have_one_deviations_table_vs_dm_nevis_with_a_reason_on_every_row():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "short-stream.md").read_text()
    assert text.count("### Deviations from dm_nevis") == 1
    section = text.split("### Deviations from dm_nevis", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0].split("|")[1:5] == [" ", " dm_nevis ", " nevisbench ", " reason "]
    body = rows[2:]
    assert len(body) >= 10
    for row in body:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row
