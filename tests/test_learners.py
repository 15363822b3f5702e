"""The paper's learners: semantics (masks, freezing, truncation, adapters, channel pruning) and
their FLOPs, plus a short run of every registered option in both scenarios."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from nevisbench.api.learner import LearnerContext, TaskInfo
from nevisbench.config import compose, group_options
from nevisbench.registry import get_learner_class
from nevisbench.run.learner.scenario import Scenario
from nevisbench.run.probe import step_flops
from nevisbench.run.runner import run
from nevisbench.tasks.loader import BatchLoader, Split

TASK = TaskInfo("t", "t", 0, "object", 5)


def _learner(option: str, *overrides: str, image_size: int = 32, backbone: str = "resnet18"):
    cfg = compose([f"learner={option}", *overrides])
    net = torchvision.models.get_model(backbone)
    width = net.fc.in_features
    net.fc = nn.Identity()
    learner = get_learner_class(cfg.learner.name)(
        OmegaConf.to_object(cfg.learner),
        LearnerContext(scenario="transfer", seed=0, image_size=image_size, train=cfg.train, feature_dim=width),
    )
    return _Prepared(learner, Scenario("transfer", learner.prepare(net)))


class _Prepared:
    """A learner after `prepare`, whose `begin_task(task)` starts from the runner's scenario."""

    def __init__(self, learner, scenario: Scenario) -> None:
        self.learner, self.scenario = learner, scenario

    def begin_task(self, task: TaskInfo) -> L.LightningModule:
        return self.learner.begin_task(task, self.scenario.start())

    def __getattr__(self, name: str):
        return getattr(self.learner, name)


def _train(module: L.LightningModule, steps: int = 3, image_size: int = 32) -> None:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (16, 3, image_size, image_size), dtype=torch.uint8, generator=g), torch.arange(16) % 5)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=BatchLoader(split, batch_size=8, image_size=image_size, train=True, augment=False))


# -- pruning ------------------------------------------------------------------------------------
def _masked_convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and hasattr(m, "weight_mask")]


@pytest.mark.slow
def test_weight_masks_hold_after_optimizer_steps():
    module = _learner("weight_prune").begin_task(TASK)
    convs = _masked_convs(module.backbone)
    assert len(convs) == 20  # stem + 16 block convs + 3 shortcuts of resnet18
    before = [c.weight_orig.detach().clone() for c in convs]
    _train(module)
    for conv, old in zip(convs, before, strict=False):
        mask = conv.weight_mask.bool()
        assert conv.weight_mask.mean().item() == pytest.approx(0.5, abs=1e-3)
        assert torch.all(conv.weight[~mask] == 0)  # the weight the layer uses
        assert not torch.equal(conv.weight_orig[mask], old[mask])  # kept weights did train


def test_global_scope_prunes_half_overall_but_unevenly_per_layer():
    convs = _masked_convs(_learner("weight_prune", "learner.scope=global").begin_task(TASK).backbone)
    kept = sum(c.weight_mask.sum().item() for c in convs)
    total = sum(c.weight_mask.numel() for c in convs)
    assert kept / total == pytest.approx(0.5, abs=1e-3)
    assert len({round(c.weight_mask.mean().item(), 2) for c in convs}) > 3


@pytest.mark.slow
def test_random_signal_differs_from_magnitude():
    for option in ("weight_prune", "conv_prune"):
        magnitude = _masked_convs(_learner(option).begin_task(TASK).backbone)[5].weight_mask
        random = _masked_convs(_learner(option, "learner.signal=random").begin_task(TASK).backbone)[5].weight_mask
        assert magnitude.mean() == pytest.approx(random.mean())
        assert not torch.equal(magnitude, random)


def test_conv_prune_keeps_whole_kernels_per_output_channel():
    conv = _masked_convs(_learner("conv_prune").begin_task(TASK).backbone)[3]
    kernels = conv.weight_mask.sum((2, 3))  # (Cout, Cin): 0 or K*K
    k2 = conv.kernel_size[0] * conv.kernel_size[1]
    assert set(kernels.unique().tolist()) <= {0.0, float(k2)}
    assert torch.all((kernels > 0).sum(1) == round(0.5 * conv.in_channels))
    # magnitude: every kept kernel has at least the L1 norm of every dropped kernel of its row
    norms = conv.weight_orig.detach().abs().sum((2, 3))
    kept, dropped = norms.masked_fill(kernels == 0, float("inf")), norms.masked_fill(kernels > 0, float("-inf"))
    assert torch.all(kept.min(1).values >= dropped.max(1).values)


def test_grouped_conv_prune_equals_its_masked_pattern_and_runs_fewer_flops():
    from nevisbench.learners.conv_prune import GroupSharedConv

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1, bias=False)
    scores = conv.weight.detach().abs().sum((2, 3))
    grouped = GroupSharedConv(conv, groups=2, keep=4, group_scores=scores)
    mask = torch.zeros(8, 16)
    for g, members in enumerate(torch.arange(8).chunk(2)):
        mask[members[:, None], grouped.inputs[g * 4 : (g + 1) * 4][None, :]] = 1
    reference = nn.functional.conv2d
    x = torch.randn(2, 16, 6, 6)
    expected = reference(x, conv.weight * mask[:, :, None, None], padding=1)
    assert torch.allclose(grouped(x), expected, atol=1e-5)
    assert grouped.conv.groups == 2 and grouped.conv.weight.shape == (8, 4, 3, 3)


def test_channel_pruning_keeps_residual_shapes_consistent():
    learner = _learner("channel_prune")
    net = learner.begin_task(TASK).backbone
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            out = block.conv2.out_channels  # BasicBlock: conv2 output is added to the shortcut
            shortcut = block.downsample[0].out_channels if block.downsample is not None else block.conv1.in_channels
            assert out == shortcut == block.bn2.num_features
    assert net.conv1.out_channels == 64  # the stem is kept
    # the ratio is calibrated to (1 - X) of the FLOPs: more than 1 - sqrt(1 - X) of the channels go,
    # because the stem and the layer1 residual stream DepGraph couples to it keep theirs
    assert learner.feature_dim < round(512 * (0.5 ** 0.5))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, learner.feature_dim)


# -- freezing, truncation, adapters -------------------------------------------------------------
def test_frozen_blocks_are_bit_identical_after_a_task():
    module = _learner("ft_block_2to3").begin_task(TASK)
    net = module.backbone
    frozen = [net.conv1, net.bn1, net.layer1, net.layer2]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]  # weights and BN statistics
    trained_before = net.layer3[0].conv1.weight.detach().clone()
    _train(module)
    for m, state in zip(frozen, before, strict=False):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())
    assert not torch.equal(net.layer3[0].conv1.weight, trained_before)


def test_ft_head_trains_only_the_head():
    module = _learner("ft_head").begin_task(TASK)
    assert all(not p.requires_grad for p in module.backbone.parameters())
    assert all(p.requires_grad for p in module.head.parameters())


@pytest.mark.parametrize(("last_block", "width"), [(0, 64), (1, 128), (2, 256)])
def test_truncated_models_drop_the_later_blocks(last_block, width):
    learner = _learner(f"block_0to{last_block}_ft_all")
    module = learner.begin_task(TASK)
    kinds = [type(m).__name__ for m in module.backbone]
    assert kinds.count("Sequential") == last_block + 1  # stages kept
    assert learner.feature_dim == width and module.head.in_features == width
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_adapters_are_the_only_trainable_backbone_weights_and_start_at_zero():
    learner = _learner("adp1x1")
    module = learner.begin_task(TASK)
    trainable = {n for n, p in module.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or ".bn" in n or n.startswith("bn1") or "downsample.1" in n for n in trainable)
    assert not any(n.endswith("conv.weight") or n == "conv1.weight" for n in trainable)
    assert sum(".adapter." in n for n in trainable) == 16  # resnet18: 8 blocks x two 3x3 convs
    reference = torchvision.models.resnet18()
    reference.fc = nn.Identity()
    reference.load_state_dict({k.replace(".conv.", "."): v for k, v in module.backbone.state_dict().items() if ".adapter." not in k})
    x = torch.randn(2, 3, 32, 32)
    module.backbone.eval(), reference.eval()
    assert torch.allclose(module.backbone(x), reference(x), atol=1e-5)  # zero-initialised adapters


# -- FLOPs (ResNet50) ---------------------------------------------------------------------------
HEAD_1000 = 3 * 2 * 2048 * 1000  # dense linear head: forward + grad-input + grad-weight


@pytest.fixture(scope="module")
def resnet50_224() -> dict[str, dict]:
    reports = {}
    for option in ("finetune", "weight_prune", "conv_prune", "channel_prune"):
        reports[option] = step_flops(compose([f"learner={option}", "backbone.name=resnet50", "data.image_size=224"]))
    return reports


@pytest.mark.slow
def test_pruned_learners_cost_half_the_dense_conv_flops(resnet50_224):
    dense = resnet50_224["finetune"]["train_step"]["algorithmic"]["total"]
    expected = 0.5 * (dense - HEAD_1000) + HEAD_1000
    for option in ("weight_prune", "conv_prune"):
        step = resnet50_224[option]["train_step"]
        assert step["algorithmic"]["total"] == pytest.approx(expected, rel=0.02)
        assert step["executed"]["total"] == pytest.approx(dense)  # masks do not speed anything up
    channel = resnet50_224["channel_prune"]["train_step"]
    assert channel["algorithmic"]["total"] == pytest.approx(0.5 * dense, rel=0.02)
    assert channel["executed"] == channel["algorithmic"]


@pytest.mark.slow
def test_freezing_and_truncation_order_the_flops():
    def report(option: str) -> dict:
        return step_flops(compose([f"learner={option}", "backbone.name=resnet50", "data.image_size=64"]))["train_step"]["algorithmic"]

    finetune, ft13, ft33 = report("finetune"), report("ft_block_1to3"), report("ft_block_3to3")
    assert ft33["backward"] < ft13["backward"] < finetune["backward"]
    assert ft33["forward"] == pytest.approx(finetune["forward"])
    assert report("block_0to1_ft_all")["forward"] < report("block_0to2_ft_all")["forward"] < finetune["forward"]


# -- every registered option runs, in both scenarios ----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["transfer", "continual"])
@pytest.mark.parametrize("option", group_options("learner"))
def test_every_learner_option_completes_a_short_run(option, scenario, tmp_path, tiny):
    cfg = compose([*tiny, f"learner={option}", f"scenario={scenario}", "train.max_steps=1", "budget.milestones=1",
                   "stream.tasks=[faces,shapes]", f"out_dir={tmp_path}"])
    summary = json.loads((run(cfg) / "summary.json").read_text())
    assert summary["num_tasks"] == 2 and summary["learner"] == option
    assert all(t["flops"]["train"] > 0 and t["flops"]["eval"] > 0 for t in summary["tasks"])
