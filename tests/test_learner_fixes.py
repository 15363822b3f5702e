"""Pruning rules at the edges: no layer is emptied at high sparsity, kernel pruning on grouped
(ResNeXt) convs, and channel pruning calibrated to (1 - X) of the dense training FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from nevisbench.api.learner import LearnerContext
from nevisbench.config import compose
from nevisbench.learners import channel_prune
from nevisbench.learners.conv_prune import GroupSharedConv
from nevisbench.registry import get_learner_class
from nevisbench.run.probe import step_flops
from nevisbench.run.runner import run


def _prepared(option: str, *overrides: str, backbone: str = "resnet18", image_size: int = 32):
    cfg = compose([f"learner={option}", *overrides])
    torch.manual_seed(0)  # the random init (and so what magnitude pruning keeps) is the same in every worker and order
    net = torchvision.models.get_model(backbone)
    net.fc = nn.Identity()
    learner = get_learner_class(cfg.learner.name)(
        OmegaConf.to_object(cfg.learner),
        LearnerContext(scenario="transfer", seed=0, image_size=image_size, train=cfg.train, feature_dim=512),
    )
    return learner, learner.prepare(net)


def _depends_on_input(net: nn.Module, image_size: int = 32) -> bool:
    net.eval()
    inputs = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = net(inputs[:2]), net(inputs[2:])
    return not torch.allclose(a, b)


# -- no rule empties a layer ----------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.9, 0.95])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_conv_prune_keeps_a_kernel_per_output_channel_at_high_sparsity(sparsity, scope):
    _, net = _prepared("conv_prune", f"learner.sparsity={sparsity}", f"learner.scope={scope}")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(hasattr(c, "weight_mask") for c in convs)  # the stem included (prune_stem=true)
    for conv in convs:
        assert torch.all(conv.weight_mask.sum((2, 3)).count_nonzero(1) >= 1)
    if scope == "local":  # the stem's rule: max(1, round((1 - X) x 3)) of its 3 input kernels
        assert torch.all(net.conv1.weight_mask.sum((2, 3)).count_nonzero(1) == 1)
    assert _depends_on_input(net)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_weight_prune_keeps_a_weight_per_output_channel_and_the_budget(scope):
    _, net = _prepared("weight_prune", "learner.sparsity=0.999", f"learner.scope={scope}")
    stem = net.conv1.weight_mask  # 64 x 3 x 7 x 7: round(0.001 x 9408) = 9 < 64 rows
    assert torch.all(stem.flatten(1).sum(1) >= 1)
    if scope == "local":
        assert stem.sum() == 64  # the floor, not more
        big = net.layer4[1].conv2.weight_mask
        assert big.sum() == round(0.001 * big.numel())  # the floor costs nothing where it is not needed
    assert _depends_on_input(net)


def test_channel_prune_keeps_channels_in_every_layer_at_high_sparsity():
    learner, net = _prepared("channel_prune", "learner.sparsity=0.9", "learner.scope=global")
    assert all(m.out_channels >= 1 for m in net.modules() if isinstance(m, nn.Conv2d))
    assert learner.feature_dim >= 1 and _depends_on_input(net)


@pytest.mark.slow
def test_conv_prune_at_0_9_learns_the_demo_digits(tmp_path, tiny):
    cfg = compose([*tiny, "learner=conv_prune", "learner.sparsity=0.9", "stream.tasks=[digits]", "data.image_size=32",
                   "train.max_steps=40", "data.batch_size=32", "train.lr=0.1", "budget.milestones=0", f"out_dir={tmp_path}"])
    task = json.loads((run(cfg) / "summary.json").read_text())["tasks"][0]
    chance = 1 - 1 / task["num_classes"]  # 0.9 for 10 digits
    assert task["test_error"] < chance - 0.1


# -- grouped convs (ResNeXt) ----------------------------------------------------------------------
def test_group_shared_conv_on_a_grouped_conv_equals_its_masked_pattern():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1, groups=2, bias=False)  # each output reads 8 inputs
    scores = conv.weight.detach().abs().sum((2, 3))  # (8, 8): (Cout, Cin/groups)
    shared = GroupSharedConv(conv, groups=2, keep=3, group_scores=scores)
    assert shared.conv.groups == 4 and shared.conv.weight.shape == (8, 3, 3, 3)
    mask = torch.zeros(8, 8)
    for chunk, outputs in enumerate(torch.arange(8).chunk(4)):
        inputs = shared.inputs[chunk * 3 : (chunk + 1) * 3]
        assert torch.all(inputs // 8 == outputs[0] // 4)  # a chunk reads only its own group's inputs
        mask[outputs[:, None], (inputs % 8)[None, :]] = 1
    x = torch.randn(2, 16, 6, 6)
    expected = nn.functional.conv2d(x, conv.weight * mask[:, :, None, None], padding=1, groups=2)
    assert torch.allclose(shared(x), expected, atol=1e-5)


RESNEXT = ["backbone.name=resnext50_32x4d", "data.image_size=32"]
CLASSES = 10


@pytest.fixture(scope="module")
def resnext_dense() -> float:
    return step_flops(compose(["learner=finetune", *RESNEXT]), num_classes=CLASSES)["train_step"]["algorithmic"]["total"]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["masked", "grouped"])
def test_conv_prune_on_resnext_costs_the_kept_fraction(impl, resnext_dense):
    """At X = 0.75 every conv keeps exactly 1/4 of the Cin/groups kernels each output reads (4, 8,
    ..., 2048 are multiples of 4), so the algorithmic step is (1 - X) x dense exactly, except the
    stem (masked: 1 of 3 kernels; grouped: dense) and the linear head (dense). Those two are
    computed here, so the only tolerance is float summation (1e-6). Against (1 - X) x dense alone,
    the tolerance is what the stem and the head can add, at most X x their FLOPs (they are 1.9% of
    a dense step here)."""
    report = step_flops(compose(["learner=conv_prune", f"learner.impl={impl}", "learner.sparsity=0.75", *RESNEXT]),
                        num_classes=CLASSES)["train_step"]
    stem = 2 * (2 * 64 * 3 * 7 * 7 * 16 * 16)  # forward + grad-weight (the image needs no gradient), 16x16 output
    head = 3 * 2 * 2048 * CLASSES  # forward, grad-input, grad-weight
    stem_kept = 1 / 3 if impl == "masked" else 1.0
    expected = 0.25 * (resnext_dense - stem - head) + stem_kept * stem + head
    assert report["algorithmic"]["total"] == pytest.approx(expected, rel=1e-6)
    assert abs(report["algorithmic"]["total"] - 0.25 * resnext_dense) <= 0.75 * (stem + head)
    executed = resnext_dense if impl == "masked" else expected  # masks run densely; gathered convs do not
    assert report["executed"]["total"] == pytest.approx(executed, rel=1e-6)


# -- channel pruning hits (1 - X) of the dense FLOPs ------------------------------------------------
def _train_total(*overrides: str) -> float:
    return step_flops(compose(list(overrides)))["train_step"]["algorithmic"]["total"]


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75, 0.9])
def test_channel_prune_costs_one_minus_x_of_dense_on_resnet18(sparsity):
    size = ["backbone.name=resnet18", "data.image_size=64"]
    pruned = _train_total("learner=channel_prune", f"learner.sparsity={sparsity}", *size)
    assert pruned / _train_total("learner=finetune", *size) == pytest.approx(1 - sparsity, rel=0.02)


def test_channel_prune_fraction_does_not_depend_on_image_size():
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    cfg = channel_prune.ChannelPruneConfig(sparsity=0.75)

    def fraction(size: int) -> float:
        example = torch.randn(2, 3, size, size)
        dense = channel_prune._train_step_flops(net, example)
        pruned = torchvision.models.resnet18()
        pruned.fc = nn.Identity()
        channel_prune._prune(pruned, cfg, 0.5, seed=0, example=example[:1])
        return channel_prune._train_step_flops(pruned, example) / dense

    assert fraction(96) == pytest.approx(fraction(32), rel=1e-9)  # both multiples of 32: exact


@pytest.mark.slow
def test_channel_prune_calibration_is_cached_per_backbone_sparsity_and_size(monkeypatch):
    calls = []
    count = channel_prune._train_step_flops
    monkeypatch.setattr(channel_prune, "_train_step_flops", lambda *a: calls.append(1) or count(*a))
    monkeypatch.setattr(channel_prune, "_CALIBRATED", {})
    cfg = channel_prune.ChannelPruneConfig(sparsity=0.5)

    def ratio(size: int) -> float:
        net = torchvision.models.resnet18()
        net.fc = nn.Identity()
        return channel_prune.calibrated_ratio(net, cfg, seed=0, image_size=size)

    first = ratio(64)
    probes = len(calls)
    assert 2 <= probes <= 10  # dense count + a few probes
    assert ratio(224) == first and len(calls) == probes  # both probed at 32 px: no new probe
    ratio(48)  # not a multiple of 32: probed at its own size
    assert len(calls) > probes


@pytest.mark.slow  # resnet50 at 224 px; test_channel_prune_costs_one_minus_x_of_dense_on_resnet18 covers it
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75, 0.9])
def test_channel_prune_costs_one_minus_x_of_dense_on_resnet50_at_224(sparsity):
    size = ["backbone.name=resnet50", "data.image_size=224"]
    pruned = _train_total("learner=channel_prune", f"learner.sparsity={sparsity}", *size)
    assert pruned / _train_total("learner=finetune", *size) == pytest.approx(1 - sparsity, rel=0.02)
