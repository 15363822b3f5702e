"""The FLOP meter against analytic formulas and against FlopCounterMode run independently."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nevisbench.api.learner import TaskInfo
from nevisbench.api.module import TaskModule
from nevisbench.compute.flops import FlopMeter, StepCounter, StepFlops
from nevisbench.run.task.callbacks import FlopMeterCallback
from nevisbench.tasks.loader import BatchLoader, Split


def _count(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of module(x).sum().backward() under nevisbench's counter."""
    with StepCounter(module) as counter:
        module(x).sum().backward()
    totals = counter.totals()
    return totals.forward, totals.backward


@pytest.mark.parametrize("groups", [1, 4, 64])
def test_conv_forward_and_backward_match_the_analytic_formula(groups):
    n, c_in, c_out, k, hw = 2, 64, 128, 3, 8
    conv = nn.Conv2d(c_in, c_out, k, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c_in, hw, hw, requires_grad=True)
    forward, backward = _count(conv, x)
    expected = 2 * n * hw * hw * c_out * (c_in // groups) * k * k  # 2 FLOPs per multiply-add
    assert forward == expected
    assert backward == 2 * expected  # grad-input + grad-weight, each one forward


def test_torch_stock_rule_over_counts_grouped_backward_which_we_fix():
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=4, bias=False)
    x = torch.randn(1, 64, 8, 8, requires_grad=True)
    with FlopCounterMode(display=False) as stock:
        out = conv(x)
        f = stock.get_total_flops()
        out.sum().backward()
    assert (stock.get_total_flops() - f) / f == pytest.approx(5.0)  # torch: 2.5x too much
    forward, backward = _count(conv, x)
    assert backward / forward == pytest.approx(2.0)


def test_first_layer_needs_no_input_gradient():
    conv = nn.Conv2d(3, 8, 3, bias=False)
    forward, backward = _count(conv, torch.randn(1, 3, 10, 10))  # input does not require grad
    assert backward == forward


def test_linear_matches_the_analytic_formula():
    n, d_in, d_out = 5, 32, 10
    forward, backward = _count(nn.Linear(d_in, d_out), torch.randn(n, d_in, requires_grad=True))
    assert forward == 2 * n * d_in * d_out and backward == 2 * forward


def test_frozen_layers_cost_no_backward():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    model[0].requires_grad_(False)
    forward, backward = _count(model, torch.randn(2, 16))
    assert backward == 2 * 2 * 16 * 4  # only the last layer's grad-weight


def test_meter_accumulates_per_task_and_per_stream():
    meter = FlopMeter()
    meter.start_task()
    step = meter.store("k", StepFlops(forward=40, backward=80, algorithmic_forward=20, algorithmic_backward=40).scaled(1 / 4))
    assert meter.cached("k") == StepFlops(10, 20, 5, 10)
    meter.charge_train(step, 4)
    meter.charge_train(step, 2)
    meter.charge_eval(StepFlops(5), 3)
    assert (meter.task.train_forward, meter.task.train_backward, meter.task.eval) == (30, 60, 15)
    assert (meter.task.executed_train_forward, meter.task.executed_train_backward, meter.task.executed_eval) == (60, 120, 15)
    meter.end_task()
    meter.start_task()
    meter.charge_eval(StepFlops(1), 1)
    assert meter.cumulative.total == 106 and meter.stream.total == 105
    assert meter.cumulative.measure("executed") == 196


def _fit_one_step(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> FlopMeter:
    meter = FlopMeter()
    meter.start_task()
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[FlopMeterCallback(meter)])
    loader = BatchLoader(Split(x, y), batch_size=len(y), image_size=x.shape[-1], train=True, augment=False)
    trainer.fit(module, train_dataloaders=loader)
    return meter


@pytest.mark.slow
def test_resnet50_training_step_counts_24_30_gflop_per_224px_image():
    import torchvision

    backbone = torchvision.models.resnet50()
    backbone.fc = nn.Identity()
    task = TaskInfo("t", "t", 0, "object", 1000)
    from nevisbench.config import compose

    module = TaskModule(backbone, nn.Linear(2048, 1000), task=task, train=compose([]).train)
    x = torch.randint(0, 255, (2, 3, 224, 224), dtype=torch.uint8)
    y = torch.tensor([1, 2])
    meter = _fit_one_step(module, x, y)
    per_image = meter.task.train / 2
    assert per_image == pytest.approx(24.299e9, rel=0.005)
    assert meter.task.train_forward / 2 == pytest.approx(8.178e9, rel=0.005)

    # the same step counted independently with torch's stock counter (ResNet50 has no grouped conv)
    probe = torchvision.models.resnet50()
    xf = torch.randn(2, 3, 224, 224)
    with FlopCounterMode(display=False) as stock:
        nn.functional.cross_entropy(probe(xf), y).backward()
    assert meter.task.train == pytest.approx(stock.get_total_flops(), rel=1e-6)


# -- algorithmic (sparsity-aware) accounting ------------------------------------------------------
import torch.nn.utils.prune as prune  # noqa: E402

from nevisbench.compute.flops import mask_densities  # noqa: E402
from nevisbench.errors import PluginError  # noqa: E402


class _TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x)).mean()


def _step(model: nn.Module, x: torch.Tensor):
    with StepCounter(model) as counter:
        loss = model(x)
        counter.mark_forward()
        loss.backward()
    return counter.result(int(x.shape[0]))


def test_masked_layer_costs_its_kept_fraction_in_forward_and_backward():
    model = _TwoConvs()
    x = torch.randn(2, 3, 6, 6)
    dense = _step(model, x)
    # keep exactly 1/4 of body.0's 3x3 kernels: 16 x 8 kernels, mask 32 of 128 kernels on
    mask = torch.zeros(16, 8, 3, 3)
    mask.view(-1, 9)[::4] = 1
    prune.custom_from_mask(model.body[0], "weight", mask)
    assert mask_densities(model) == {"body.0": 0.25}
    sparse = _step(model, x)
    stem_fwd = 2 * 36 * 8 * 3 * 9  # per image: 2 * HW * Cout * Cin * K
    body_fwd = 2 * 36 * 16 * 8 * 9
    assert dense.forward == stem_fwd + body_fwd
    assert sparse.forward == dense.forward  # executed: the masked conv still runs densely
    assert sparse.algo_forward == stem_fwd + 0.25 * body_fwd
    # backward: stem needs grad-weight only (input needs no grad); body needs grad-input + grad-weight
    assert sparse.backward == stem_fwd + 2 * body_fwd
    assert sparse.algo_backward == stem_fwd + 0.25 * 2 * body_fwd


def test_masks_are_found_under_the_lightning_module_root_during_training():
    import torchvision

    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    from nevisbench.config import compose

    module = TaskModule(backbone, nn.Linear(512, 10), task=TaskInfo("t", "t", 0, "object", 10), train=compose([]).train)
    dense = _fit_one_step(module, torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]))
    conv = module.backbone.layer3[0].conv2
    prune.random_unstructured(conv, "weight", amount=0.5)
    sparse = _fit_one_step(module, torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]))
    # layer3.0.conv2: 256->256 3x3 at 2x2 output, per image forward; backward = 2x forward
    conv_fwd = 2 * 4 * 256 * 256 * 9
    saved = 0.5 * 3 * conv_fwd * 2  # both images, forward + backward, half the weights masked
    assert sparse.task.executed_train == dense.task.executed_train
    assert dense.task.train - sparse.task.train == pytest.approx(saved, rel=1e-3)


def test_a_mask_that_is_not_applied_is_refused():
    model = _TwoConvs()
    model.body[0].register_buffer("weight_mask", torch.zeros_like(model.body[0].weight))
    with pytest.raises(PluginError, match="non-zero where the mask is zero"):
        mask_densities(model)


def test_masked_shortcut_is_charged_only_its_own_backward():
    """Module tracking in backward charges a residual shortcut with its main branch's gradients;
    the meter matches backward ops to masked layers by weight instead."""
    import torchvision

    net = torchvision.models.resnet50()
    net.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)

    def step() -> StepFlops:
        with StepCounter(net) as counter:
            out = net(x).sum()
            counter.mark_forward()
            out.backward()
        return counter.result(2)

    dense = step()
    shortcut = net.layer2[0].downsample[0]  # 256 -> 512, 1x1, stride 2: 4x4 output at 32px input
    prune.custom_from_mask(shortcut, "weight", torch.zeros_like(shortcut.weight))
    sparse = step()
    conv_fwd = 2 * 16 * 512 * 256
    assert dense.algo_forward - sparse.algo_forward == pytest.approx(conv_fwd)
    assert dense.algo_backward - sparse.algo_backward == pytest.approx(2 * conv_fwd)


# -- attention: the fast paths of eval and no_grad forwards cost what the training forward does -------
def _forward_flops(model: nn.Module, x: torch.Tensor, *, train: bool, grad: bool) -> float:
    model.train(train)
    with torch.set_grad_enabled(grad), StepCounter(model) as counter:
        model(x)
    return counter.totals().forward


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_an_encoder_eval_forward_takes_the_fast_path_and_is_charged_the_training_forward():
    model, x = _encoder(), torch.randn(3, 10, 32)
    b, length, e, ffn = 3, 10, 32, 64
    per_layer = 2 * b * length * e * 3 * e + 2 * 2 * b * length * length * e + 2 * b * length * e * e + 2 * 2 * b * length * e * ffn
    train = _forward_flops(model, x, train=True, grad=True)
    assert train == 2 * per_layer  # projections, QK^T, AV (the CPU flash kernel), out projection, FFN
    assert _forward_flops(model, x, train=False, grad=False) == pytest.approx(train, rel=0.01)  # _transformer_encoder_layer_fwd
    assert _forward_flops(model, x, train=True, grad=False) == pytest.approx(train, rel=0.01)


def test_multihead_attention_fast_path_is_charged_like_its_training_forward():
    torch.manual_seed(0)
    mha, x = nn.MultiheadAttention(32, 4, batch_first=True), torch.randn(2, 7, 32)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    model = SelfAttention()
    train = _forward_flops(model, x, train=True, grad=True)
    assert train == 2 * 2 * 7 * 32 * 32 * 4 + 2 * 2 * 2 * 7 * 7 * 32
    assert _forward_flops(model, x, train=False, grad=False) == pytest.approx(train, rel=0.01)  # _native_multi_head_attention


def test_a_small_torchvision_vit_eval_forward_is_charged_like_its_training_forward():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    train = _forward_flops(vit, x, train=True, grad=True)
    for train_mode, grad in ((False, False), (False, True), (True, False)):
        assert _forward_flops(vit, x, train=train_mode, grad=grad) == pytest.approx(train, rel=0.01)


def test_sdpa_kernels_forward_and_backward_are_counted():
    q = torch.randn(2, 4, 9, 8, requires_grad=True)
    with StepCounter(nn.Module()) as counter:  # on CPU: the flash kernel torch's registry lacks
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    totals = counter.totals()
    assert totals.forward == 2 * 2 * 2 * 4 * 9 * 9 * 8
    assert totals.backward > totals.forward


# -- the stable learner API ----------------------------------------------------------------------------
def test_a_plugin_with_a_method_the_api_does_not_call_is_refused_in_one_line(monkeypatch):
    from conftest import register_learner

    from nevisbench.api.learner import Learner, check_api
    from nevisbench.errors import PluginError
    from nevisbench.registry import get_learner_class

    class OldApi(Learner):
        def build_module(self, backbone, task):
            return None

    class Typo(Learner):
        def end_tsk(self, task, module):
            return None

    class WithHelper(Learner):
        helpers = ("fisher",)

        def fisher(self):
            return None

    class OldSignature(Learner):
        def begin_task(self, task):
            return None

    class Future(Learner):
        api_version = 3

    assert check_api(OldApi) == "defines build_module(), which the learner API no longer calls; implement begin_task() instead"
    assert "defines end_tsk(), which is not a hook of the learner API" in check_api(Typo)
    assert check_api(WithHelper) is None
    assert "the API 1 signature" in check_api(OldSignature)
    assert "written for learner API version 3, but this nevisbench has version 2" in check_api(Future)
    import sys

    monkeypatch.setattr(sys.modules[__name__], "OldApi", OldApi, raising=False)
    register_learner(monkeypatch, "old", f"{__name__}:OldApi")
    with pytest.raises(PluginError) as info:
        get_learner_class("old")
    assert str(info.value).startswith("Learner plugin 'old'") and "\n" not in str(info.value)


def test_counters_nest_without_charging_an_op_twice_and_a_learners_own_counter_hides_nothing():
    from nevisbench.compute.flops import counting_outside, take_pending

    take_pending()
    model, x = nn.Linear(8, 8), torch.randn(2, 8)
    one = 2 * 2 * 8 * 8
    with StepCounter(nn.Module(), charging=True, threads=True) as window:
        with counting_outside():  # inside a training window the window counts
            model(x)
        with StepCounter(model) as own:  # a learner's own counter
            model(x)
    assert (window.totals().forward, own.totals().forward, take_pending().forward) == (2 * one, one, 0)
    with counting_outside():
        with StepCounter(model, charging=True) as evaluation:  # a harness window inside: it counts
            model(x)
        model(x)
    assert (evaluation.totals().forward, take_pending().forward) == (one, one)
