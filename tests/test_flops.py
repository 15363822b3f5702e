"""The FLOP meter against analytic formulas and against FlopCounterMode run independently."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nevisbench.callbacks import FlopMeterCallback
from nevisbench.data import BatchLoader, Split
from nevisbench.flops import FlopMeter, FlopTally, StepFlops, counting_mode
from nevisbench.learner import TaskInfo
from nevisbench.module import TaskModule


def _count(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of module(x).sum().backward() under nevisbench's counter."""
    with counting_mode() as mode:
        out = module(x)
        forward = mode.get_total_flops()
        out.sum().backward()
    return forward, mode.get_total_flops() - forward


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
    step = meter.store("k", StepFlops(forward=40, backward=80), batch_size=4)
    assert step == StepFlops(10, 20)
    meter.charge_train(step, 4)
    meter.charge_train(step, 2)
    meter.charge_eval(StepFlops(5), 3)
    assert meter.task == FlopTally(train_forward=60, train_backward=120, eval=15)
    meter.end_task()
    meter.start_task()
    meter.charge_eval(StepFlops(1), 1)
    assert meter.cumulative.total == 196 and meter.stream.total == 195


def _fit_one_step(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> FlopMeter:
    meter = FlopMeter()
    meter.start_task()
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[FlopMeterCallback(meter)])
    loader = BatchLoader(Split(x, y), batch_size=len(y), image_size=x.shape[-1], train=True, augment=False)
    trainer.fit(module, train_dataloaders=loader)
    return meter


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
