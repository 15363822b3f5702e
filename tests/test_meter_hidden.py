"""Compute hidden from the meter (issue 30): every trick in tests/helpers/hiding_learners.py is counted,
refused in one line, or flagged by the time audit; honest plugins are never flagged."""

from __future__ import annotations

import json

import hiding_learners
import pytest
import torch
from conftest import TINY, register_learner

from nevisbench.compute import guard, native
from nevisbench.config import compose

STEPS = 4
NATIVE = pytest.mark.skipif(not native.available(), reason=f"no native engine here: {native.unavailable_reason()}")
# enough work per step that the time audit measures seconds, not milliseconds (resnet18, 48 px, batch 16)
AUDITED = ["trainer=cpu", "trainer.progress_bar=false", "data.image_size=48", "data.batch_size=16",
           "train.max_steps=12", "budget.milestones=0"]


def _line(monkeypatch, tmp_path, target: str, *extra: str, settings: list[str] | None = None) -> dict:
    """The first results line of a 1-task run of plugin `target` (every step counted: a third-party plugin)."""
    from nevisbench.run.runner import run

    hiding_learners.WORK["extra"] = 0
    register_learner(monkeypatch, "hider", f"hiding_learners:{target}")
    base = settings if settings is not None else [*TINY, f"train.max_steps={STEPS}", "budget.milestones=0"]
    cfg = compose([*base, "learner=hider", "stream.tasks=[faces]", "on_failure=skip", f"out_dir={tmp_path / target}", *extra])
    threads = torch.get_num_threads()
    if settings is AUDITED:  # one intra-op thread: on a shared 2-core runner, 2 threads spin-wait on each
        torch.set_num_threads(1)  # other and the process CPU time the audit reads is noise, not work
    try:
        return json.loads((run(cfg) / "results.jsonl").read_text().splitlines()[0])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _line(monkeypatch, tmp_path_factory.mktemp("honest"), "HonestLearner")


@pytest.mark.slow
@pytest.mark.parametrize(("trick", "says", "engine"), [
    ("DisablesModesLearner", "popped the FLOP meter's dispatch mode", "python"),
    ("PausesMeterLearner", "paused the FLOP meter", "auto"),
    ("HalvesChargesLearner", "FlopMeter.charge_train was replaced on the instance", "auto"),
    ("AlarmLearner", "installed a handler for SIGALRM", "auto"),
    ("LowersTallyLearner", "wrote the FLOP meter's FlopTally.train_forward", "auto"),
    ("WritesAroundGuardLearner", "the FLOP meter's FlopTally.train_backward was written around its guard", "auto"),
    ("StopsCountingLearner", "wrote the FLOP meter's FlopMeter.audit_every", "auto"),
    ("FallsThroughLearner", "registered a kernel for aten::convolution at the dispatcher's Python key", "python"),
    pytest.param("FallsThroughNativeLearner", "registered a kernel for aten::convolution at the dispatcher's Fake key", "native",
                 marks=NATIVE),
    pytest.param("SwitchesKeyOffLearner", "switched off the FLOP meter's dispatcher key", "native", marks=NATIVE),
])
def test_reaching_into_the_meter_refuses_the_task_in_one_line(monkeypatch, tmp_path, trick, says, engine):
    # `auto` counts a plugin with the native engine where it builds; the tricks aimed at one engine run under it
    line = _line(monkeypatch, tmp_path, trick, f"meter.engine={engine}")
    assert line["status"] == "failed"
    assert says in line["error"] and "\n" not in line["error"]
    assert line["error"].startswith("Learner 'hider' on faces: ")
    assert guard.violations() == []  # taken by the task that recorded them


@pytest.mark.slow
@pytest.mark.parametrize(("trick", "extra"), [
    ("RawThreadLearner", ()),  # `_thread.start_new_thread`, looked up at call time: counted like threading's threads
    ("RestoreTrainingLearner", ("protocol.selection=best_dev", "budget.milestones=2")),  # the best-dev restore is counted
])
def test_work_in_raw_threads_and_restores_is_charged(monkeypatch, tmp_path, honest, trick, extra):
    line = _line(monkeypatch, tmp_path, trick, *extra)
    assert line["status"] == "ok", line.get("error")
    done = hiding_learners.WORK["extra"]
    assert done >= STEPS
    charged = line["flops"]["executed"]["train"] / honest["flops"]["executed"]["train"]
    assert charged == pytest.approx(1 + done / STEPS, rel=0.03), f"{trick}: charged {charged:.2f}x, did {1 + done / STEPS:.2f}x"


@pytest.mark.slow
@NATIVE
def test_the_python_modes_holes_do_not_open_under_the_native_engine(monkeypatch, tmp_path, honest):
    # popping the Python dispatch modes, or fallthroughs at the Python key: the native engine counts below
    # neither, so the work is simply charged (under `meter.engine=python` both are refused, above)
    popped = _line(monkeypatch, tmp_path, "DisablesModesLearner", "meter.engine=native")
    done = hiding_learners.WORK["extra"]
    fallen = _line(monkeypatch, tmp_path, "FallsThroughLearner", "meter.engine=native")
    assert popped["status"] == fallen["status"] == "ok" and done >= STEPS
    reference = honest["flops"]["executed"]["train"]
    assert popped["flops"]["executed"]["train"] / reference == pytest.approx(1 + done / STEPS, rel=0.03)
    assert fallen["flops"]["executed"]["train"] == pytest.approx(reference, rel=1e-9)  # every convolution counted


@pytest.mark.slow
@pytest.mark.parametrize("trick", ["FinaliserLearner", "FreedModuleLearner"])  # a collected cycle; the module itself
def test_a_finaliser_training_between_tasks_is_charged_to_its_task(monkeypatch, tmp_path, honest, trick):
    line = _line(monkeypatch, tmp_path, trick)
    assert hiding_learners.WORK["extra"] == STEPS  # the finaliser ran, once
    assert line["flops"]["outside"] > 0
    charged = line["flops"]["executed"]["train"] / honest["flops"]["executed"]["train"]
    assert charged == pytest.approx(2.0, rel=0.03)


@pytest.mark.slow
def test_data_writes_to_weights_during_evaluation_flag_the_task(monkeypatch, tmp_path):
    line = _line(monkeypatch, tmp_path, "EvalDataWriteLearner")
    assert hiding_learners.WORK["extra"] > 0
    assert line["audit"]["flagged"] is True
    assert any("evaluation must not train" in flag for flag in line["audit"]["flags"])


def test_replaced_meter_methods_are_found_by_identity(monkeypatch):
    from nevisbench.compute.flops import FlopMeter

    meter = FlopMeter()
    assert guard.tampered(meter) == []
    monkeypatch.setattr(FlopMeter, "charge_eval", lambda *a, **k: None)
    assert "FlopMeter.charge_eval was replaced" in guard.tampered(meter)
    monkeypatch.undo()
    meter.paused = lambda: None  # type: ignore[method-assign]
    assert guard.tampered(meter) == ["FlopMeter.paused was replaced on the instance"]


def test_a_pause_from_outside_the_harness_keeps_counting_and_is_recorded():
    import torch

    from nevisbench.compute.counter import StepCounter

    guard.take_violations()
    layer = torch.nn.Linear(8, 8)
    with StepCounter(layer, charging=True) as counter:
        with counter.pause():  # this test is not harness code
            layer(torch.rand(2, 8))
    assert counter.totals().forward == 2 * 2 * 8 * 8
    assert any("paused the FLOP meter" in v for v in guard.take_violations())


@pytest.fixture(scope="module")
def honest_audited(tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _line(monkeypatch, tmp_path_factory.mktemp("honest_audited"), "HonestLearner", settings=AUDITED)


@pytest.mark.slow
def test_an_honest_plugin_is_audited_and_not_flagged(honest_audited):
    audit = honest_audited["audit"]
    assert audit["flagged"] is False and audit["reason"] is None
    assert audit["cpu_seconds"] > 1.0 and audit["explained_seconds"] > 0.5  # the audit measured real work
    assert 0.5 < audit["ratio"] < audit["threshold"], audit


@pytest.mark.slow
@pytest.mark.parametrize("trick", [
    "NumpyBesideLearner",  # numpy matmuls beside every torch step: 2x the work, 1x charged
    "NumpyConvLearner",  # every convolution in numpy inside an autograd.Function: ~0 charged
    "ForkedGradientsLearner",  # a forked child computes a training pass per step
])
def test_compute_outside_torch_is_flagged_by_the_time_audit(monkeypatch, tmp_path, honest_audited, trick):
    line = _line(monkeypatch, tmp_path, trick, settings=AUDITED)
    assert hiding_learners.WORK["extra"] > 0 or trick == "NumpyConvLearner"
    audit = line["audit"]
    assert line["status"] == "ok"  # flagged, not refused: the work may be honest (herding, k-means in numpy)
    assert audit["flagged"] is True, audit
    assert audit["ratio"] > 1.5 * honest_audited["audit"]["ratio"]
    assert "compute the meter did not see" in audit["reason"]


@pytest.mark.slow
def test_a_flagged_task_is_in_the_summary_and_marked_by_compare(monkeypatch, tmp_path):
    from pathlib import Path

    from nevisbench.analysis import collect, compare_rows, to_markdown

    line = _line(monkeypatch, tmp_path, "NumpyBesideLearner", settings=AUDITED)
    assert line["audit"]["flagged"] is True
    (run_dir,) = (tmp_path / "NumpyBesideLearner").iterdir()
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    assert summary["audit"]["flagged"] == 1 and summary["audit"]["flagged_tasks"] == {"faces": line["audit"]["reason"]}
    rows = compare_rows(collect([str(run_dir)]))
    table = to_markdown(rows)
    assert "audit/flagged (mean)" in table and "audit/max_ratio (mean)" in table
    assert f"task faces: {line['audit']['reason']}" in table


@pytest.mark.slow
def test_prepare_work_is_not_charged_again_when_a_run_resumes(monkeypatch, tmp_path):
    """Issue 34: a plugin's prepare() (and a thread it starts there) runs again on resume; the resumed
    run must end with the uninterrupted run's counts."""
    from nevisbench.run import runner

    register_learner(monkeypatch, "hider", "hiding_learners:PrepareWorkLearner")
    settings = [*TINY, "train.max_steps=2", "budget.milestones=0", "learner=hider", "stream.tasks=[faces,digits]"]
    whole = json.loads((runner.run(compose([*settings, f"out_dir={tmp_path / 'whole'}"])) / "summary.json").read_text())

    def stop_after_first(point: str) -> None:
        if point == "after_task:0":
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(runner, "crash_point", stop_after_first)
        with pytest.raises(Exception):  # noqa: B017  the run stops after its first task, as a kill would
            runner.run(compose([*settings, f"out_dir={tmp_path / 'cut'}"]))
    (cut,) = (tmp_path / "cut").iterdir()
    resumed = json.loads((runner.run(compose([f"resume={cut}"])) / "summary.json").read_text())
    assert len(resumed["tasks"]) == 2
    assert resumed["total_flops"] == pytest.approx(whole["total_flops"], rel=1e-9)
    outside = [t["flops"].get("outside", 0.0) for t in resumed["tasks"]]
    assert outside == pytest.approx([t["flops"].get("outside", 0.0) for t in whole["tasks"]], rel=1e-9)


def test_the_time_audit_policy_is_a_config_key_with_a_one_line_error():
    from nevisbench.errors import ConfigError
    from nevisbench.run.task.audit import audit_skipped

    cfg = compose([])
    cpu = __import__("torch").device("cpu")
    assert cfg.meter.time_audit == "auto"
    assert audit_skipped(cfg, cpu, "finetune").startswith("a learner nevisbench ships")  # auto: plugins only
    assert audit_skipped(cfg, cpu, "some_plugin") is None
    assert audit_skipped(compose(["meter.time_audit=always"]), cpu, "finetune") is None
    assert audit_skipped(compose(["meter.time_audit=off"]), cpu, "some_plugin") == "meter.time_audit=off"
    assert "cuda" in audit_skipped(cfg, __import__("torch").device("cuda"), "some_plugin")
    with pytest.raises(ConfigError, match=r"Unknown value for 'meter.time_audit': 'sometimes'. Valid: always, auto, off"):
        compose(["meter.time_audit=sometimes"])


@pytest.mark.slow
def test_a_learner_lowering_a_search_workers_meter_gets_its_task_refused(monkeypatch, tmp_path):
    # search.parallel=2: each trial runs in a worker process with a meter of its own, as guarded as the run's
    search = ["search=custom", "search.sampler=grid", "search.space.train.lr=choice(0.01,0.1)", "search.trials=2",
              "search.parallel=2"]
    line = _line(monkeypatch, tmp_path, "LowersTallyLearner", *search)
    assert line["status"] == "failed" and "\n" not in line["error"]
    assert line["error"].startswith("the task is refused: in a search worker, the learner wrote the FLOP meter's "
                                    "FlopTally.train_forward (at ")  # every trial did: the winner's failure says it
    assert "written around its guard" not in line["error"]  # one write, one finding
