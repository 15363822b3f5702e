"""The FLOP meter's native engine (nevisbench/compute/native.py, native_counter.cpp): it counts what the
Python dispatch mode counts (FLOPs exactly, and the bytes the time audit explains), for every kind of
op the meter has a rule for, nested and paused counters, other threads, and masks; a learner that
switches its dispatcher key off is refused; a run says which engine counted it."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import torch
import torch.nn.utils.prune
import torchvision
from conftest import TINY, register_learner
from torch import nn

from nevisbench.compute import counter, guard, native
from nevisbench.compute.counter import StepCounter, seen

pytestmark = pytest.mark.skipif(not native.available(), reason=f"the native counter cannot be built here: "
                                                                 f"{native.unavailable_reason()}")


@pytest.fixture(autouse=True)
def _engine_restored():
    before = counter.engine()
    guard.take_violations()
    yield
    counter.set_engine(before)
    guard.take_violations()


def _resnet() -> tuple[nn.Module, torch.Tensor]:
    return torchvision.models.resnet18(num_classes=10), torch.randn(4, 3, 32, 32)


def _pruned() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 12 * 12, 5))
    for layer in (model[0], model[2], model[4]):  # masked weights: the meter discounts them
        nn.utils.prune.random_unstructured(layer, "weight", amount=0.6)
    return model, torch.randn(4, 3, 16, 16)


def _attention() -> tuple[nn.Module, torch.Tensor]:
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(6 * 32, 3)), torch.randn(4, 6, 32)


def _step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    with torch.no_grad():
        torch._foreach_add_([p for p in model.parameters() if p.grad is not None],
                            [p.grad for p in model.parameters() if p.grad is not None], alpha=-0.01)


def _counted(engine: str, model: nn.Module, x: torch.Tensor, step=_step):
    counter.set_engine(engine)
    before = seen()
    with StepCounter(model, charging=True, threads=True) as c:
        step(model, x)
    after = seen()
    return c.totals(), tuple(b - a for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("build", [_resnet, _pruned, _attention], ids=["resnet18", "pruned_grouped", "attention"])
def test_the_native_engine_counts_exactly_what_the_python_mode_counts(build):
    torch.manual_seed(0)
    model, x = build()
    _step(model, x)  # the optimizer's first step differs from the others (no state yet): both see steady steps
    python, python_seen = _counted("python", model, x)
    native_, native_seen = _counted("native", model, x)
    assert python.forward > 0 and python.backward > 0
    assert native_ == python  # executed, algorithmic (masks discounted) and train-like FLOPs, to the FLOP
    assert native_seen == python_seen  # FLOPs, bytes moved and ops the time audit explains


def test_a_masked_model_is_discounted_by_both_engines():
    torch.manual_seed(0)
    model, x = _pruned()
    totals, _ = _counted("native", model, x)
    assert totals.algo_forward < 0.6 * totals.forward  # 60% of the weights masked


def test_nested_and_paused_counters_see_what_they_see_under_the_python_mode():
    torch.manual_seed(0)
    model, x = _resnet()

    def scenario(engine: str):
        counter.set_engine(engine)
        with StepCounter(model) as outer:  # a learner's own counter, around the harness's
            model(x)
            with StepCounter(model, charging=True) as inner:  # the harness's: hides its ops from the outer one
                model(x).sum().backward()
            with outer.pause():  # the harness pausing its own counter (this module is not harness code:
                model(x)  # the pause is recorded, and counting goes on, under both engines)
        return outer.totals(), inner.totals(), len(guard.take_violations())

    assert scenario("native") == scenario("python")


def test_a_thread_started_in_a_window_is_counted_into_it():
    torch.manual_seed(0)
    model, x = _resnet()
    counter.arm_threads()

    def in_a_thread(m, batch):
        worker = threading.Thread(target=lambda: m(batch))
        worker.start()
        worker.join()

    python, _ = _counted("python", model, x, in_a_thread)
    native_, _ = _counted("native", model, x, in_a_thread)
    assert python.forward > 0 and native_ == python


@pytest.mark.parametrize("switch", ["function", "guard"])
def test_switching_the_key_off_inside_a_window_is_recorded(switch):
    torch.manual_seed(0)
    model, x = _resnet()
    counter.set_engine("native")
    with StepCounter(model, charging=True) as c:
        if switch == "function":
            torch._C._dispatch_tls_set_dispatch_key_included("Fake", False)
            model(x)
            assert guard.mode_missing(c.mode)  # the step's check sees it too
            torch._C._dispatch_tls_set_dispatch_key_included("Fake", True)
        else:
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet("Fake")):
                model(x)
        assert not guard.mode_missing(c.mode)
    assert c.totals().forward == 0  # the hidden pass was not counted ...
    assert any("switched off the FLOP meter's dispatcher key" in v for v in guard.take_violations())  # ... but seen


def test_a_kernel_at_the_native_key_for_a_counted_op_is_recorded():
    counter.arm_threads()  # arms the kernel guard with its baseline
    counter.set_engine("native")
    library = torch.library.Library("aten", "IMPL")
    try:
        library.impl("mm", lambda a, b: torch.zeros(a.shape[0], b.shape[1]), "Fake")
        guard.check_kernels("a test")
    finally:
        library._destroy()
    assert any("registered a kernel for aten::mm at the dispatcher's Fake key" in v for v in guard.take_violations())


def test_the_engine_is_chosen_per_run(monkeypatch, caplog):
    assert native.choose_engine("auto", every_step=True) == "native"
    assert native.choose_engine("auto", every_step=False) == "python"  # cached counting: the Python mode costs ~1%
    assert native.choose_engine("python", every_step=True) == "python"
    assert native.choose_engine("native", every_step=False) == "native"
    with pytest.raises(ValueError, match=r"Unknown value for 'meter.engine': 'fast'. Valid: auto, native, python."):
        native.choose_engine("fast", every_step=True)
    monkeypatch.setattr(native, "_EXT", None)
    monkeypatch.setattr(native, "_REASON", "c++: command not found")
    with pytest.raises(ValueError, match=r"meter.engine=native: the native counter cannot be built here \(c\+\+: command"):
        native.choose_engine("native", every_step=True)
    with caplog.at_level(logging.WARNING, logger="nevisbench"):
        assert native.choose_engine("auto", every_step=True) == "python"
    assert "c++: command not found" in caplog.text


def test_a_plugin_run_counts_with_the_native_engine_and_the_same_flops(monkeypatch, tmp_path):
    from nevisbench.config import compose
    from nevisbench.run.runner import run

    register_learner(monkeypatch, "plugin", "cheating_learners:HonestPlugin")  # counted every step
    lines, engines = {}, {}
    for engine in ("auto", "python"):
        cfg = compose([*TINY, "learner=plugin", "stream.tasks=[faces]", f"meter.engine={engine}", f"out_dir={tmp_path / engine}"])
        folder = run(cfg)
        lines[engine] = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
        engines[engine] = json.loads((folder / "summary.json").read_text())["provenance"]["meter_engine"]
    assert engines == {"auto": "native", "python": "python"}
    flops = {engine: {k: v for k, v in line["flops"].items() if k != "seconds"} for engine, line in lines.items()}
    assert flops["auto"]["executed"]["train"] > 0 and flops["auto"] == flops["python"]  # every FLOP field but the timings
