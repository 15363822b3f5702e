"""Conformance kit for learner plugins: call `check_learner` from your own pytest suite.

    from nevisbench.testing import check_learner

    def test_my_learner_conforms(tmp_path):
        check_learner("my_learner", tmp_path)

It runs your registered learner through the real runner on a tiny offline stream (two demo tasks,
16x16 images, a resnet18, a few steps), in each scenario, and checks:
- the run finishes every task, with the documented results and summary schema;
- training and evaluation FLOPs are counted and > 0, and each task trains the requested steps;
- training changed the module's weights (a snapshot at `begin_task` against `end_task`);
- the same seed gives identical results (errors, FLOPs, a fingerprint of the trained weights);
- a run stopped after its first task and resumed equals the uninterrupted run (so the learner's
  `state_dict` holds all the state it carries across tasks).
Failures raise AssertionError naming the learner and what is wrong. Each check is a function
here, and nevisbench's own tests show each one failing on a learner built to break it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nevisbench import layout, registry
from nevisbench.config import compose
from nevisbench.run.store import _faults
from nevisbench.run.store.summary import SUMMARY_KEYS
from nevisbench.run.store.task_result import RESULT_KEYS

__all__ = ["check_learner", "run_learner", "RESULT_KEYS", "SUMMARY_KEYS"]

TINY = ["stream=demo", "stream.tasks=[faces,shapes]", "backbone.name=resnet18", "backbone.weights=none",
        "data.image_size=16", "data.batch_size=16", "trainer=cpu", "trainer.progress_bar=false",
        "budget.milestones=2", "logger=local", "run_name=kit"]

_WATCHED: type | None = None  # the learner class under test, wrapped (loaded by the registry)


class _Stop(BaseException):
    """Raised instead of the SIGKILL of a crash point, to stop a run in-process."""


@contextmanager
def _watching(learner: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Register, under `learner`, a subclass of its class that records per task whether training
    changed any weight and a fingerprint of the trained weights."""
    from importlib.metadata import EntryPoint

    import torch

    global _WATCHED
    cls = registry.get_learner_class(learner)
    records: dict[str, dict[str, Any]] = {}
    before: dict[str, dict[str, torch.Tensor]] = {}

    class Watched(cls):  # type: ignore[misc, valid-type]
        def begin_task(self, task, *args, **kwargs):
            module = super().begin_task(task, *args, **kwargs)
            before[task.key] = {n: p.detach().clone() for n, p in module.named_parameters()}
            return module

        def end_task(self, task, module):
            params = dict(module.named_parameters())
            start = before.pop(task.key, {})
            records[task.key] = {
                "changed": any(n not in start or not torch.equal(start[n], p.detach().to(start[n].device)) for n, p in params.items()),
                "fingerprint": sum(float(p.detach().double().sum()) for p in params.values()),
            }
            return super().end_task(task, module)

    Watched.__name__ = Watched.__qualname__ = cls.__name__
    original = registry._entry_points
    found = dict(original())
    found[learner] = EntryPoint(name=learner, value=f"{__name__}:_WATCHED", group=registry.ENTRY_POINT_GROUP)
    _WATCHED = Watched
    registry._entry_points = lambda: found  # type: ignore[assignment]  # a test patch of the cached lookup
    try:
        yield records
    finally:
        registry._entry_points = original
        _WATCHED = None


def _read(run_dir: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary = json.loads((run_dir / layout.SUMMARY).read_text())
    summary["_lines"] = [json.loads(line) for line in (run_dir / layout.RESULTS).read_text().splitlines()]
    summary["_weights"] = {k: dict(v) for k, v in records.items()}
    return summary


def _run(learner: str, out: Path, scenario: str, steps: int, overrides: list[str], records: dict,
         *, stop_after_first_task: bool = False) -> dict[str, Any]:
    from nevisbench.run.runner import run  # here: importing the kit does not load Lightning (measured 3.7 s -> 11 s)

    records.clear()
    cfg = compose([*TINY, f"learner={learner}", f"scenario={scenario}", f"train.max_steps={steps}",
                   f"out_dir={out}", *overrides])
    if not stop_after_first_task:
        return _read(run(cfg), records)
    saved_os, saved_fault = _faults.os, os.environ.get("NEVISBENCH_FAULT")

    class _StoppingOs:  # the crash point after task 0 stops this run with _Stop, not SIGKILL
        environ = {**os.environ, "NEVISBENCH_FAULT": "after_task:0"}

        @staticmethod
        def getpid() -> int:
            return os.getpid()

        @staticmethod
        def kill(pid: int, sig: int) -> None:
            raise _Stop

    _faults.os = _StoppingOs  # type: ignore[assignment]  # a test patch: the module's view of `os`
    try:
        run(cfg)
        raise AssertionError(f"learner '{learner}': the run did not reach the end of its first task")
    except _Stop:
        pass
    finally:
        _faults.os = saved_os
        if saved_fault is not None:
            os.environ["NEVISBENCH_FAULT"] = saved_fault
    run_dir = out / "kit"
    return _read(run(compose([f"resume={run_dir}"])), records)


def check_schema(summary: dict[str, Any], where: str, *, steps: int, num_tasks: int = 2) -> None:
    """Every task finished, with the documented keys, FLOPs > 0, the requested steps, an error in [0, 1]."""
    assert SUMMARY_KEYS <= set(summary), f"{where}: summary.json lacks {sorted(SUMMARY_KEYS - set(summary))}"
    lines = summary["_lines"]
    assert summary["num_tasks"] == num_tasks and len(lines) == num_tasks, f"{where}: expected {num_tasks} finished tasks, got {len(lines)}"
    for line in lines:
        assert RESULT_KEYS <= set(line), f"{where}: results line lacks {sorted(RESULT_KEYS - set(line))}"
        assert line["status"] == "ok", f"{where}: task {line['task']} failed: {line.get('error')}"
        assert line["flops"]["train"] > 0, f"{where}: no training FLOPs counted for task {line['task']}"
        assert line["flops"]["eval"] > 0, f"{where}: no evaluation FLOPs counted for task {line['task']}"
        assert line["steps"] == steps, f"{where}: trained {line['steps']} steps, expected {steps}"
        assert 0.0 <= line["test_error"] <= 1.0, f"{where}: test_error {line['test_error']} outside [0, 1]"


def check_trained(summary: dict[str, Any], where: str) -> None:
    """Training changed the weights of every task's module."""
    weights = summary["_weights"]
    for line in summary["_lines"]:
        record = weights.get(line["task"])
        assert record is not None, f"{where}: end_task was never called for task {line['task']}"
        assert record["changed"], f"{where}: training did not change any weight on task {line['task']}"


def _outcome(summary: dict[str, Any]) -> list[tuple]:
    return [(t["task"], t["test_error"], t["flops"]["total"], summary["_weights"].get(t["task"], {}).get("fingerprint"))
            for t in summary["tasks"]]


def check_same(first: dict[str, Any], second: dict[str, Any], where: str, what: str) -> None:
    """The tasks the second run trained match the first run's: errors, FLOPs, trained weights."""
    trained = set(second["_weights"])
    a = [o for o in _outcome(first) if o[0] in trained]
    b = [o for o in _outcome(second) if o[0] in trained]
    assert a == b, f"{where}: {what}: {a} != {b}"


def check_learner(learner: str, tmp_dir: str | Path, *, steps: int = 3, overrides: list[str] | None = None,
                  scenarios: tuple[str, ...] = ("transfer", "continual"), cheap: bool = False) -> dict[str, Any]:
    """Run the conformance checks for the learner registered as `learner`; return the summaries.

    The full kit makes 3 runs per scenario (6 tiny runs). `cheap=True` makes 2, in the continual
    scenario only: the determinism check then compares the resumed run's first task with the
    uninterrupted run's, which the resume check does anyway (about a third of the time)."""
    tmp_dir = Path(tmp_dir)
    extra = list(overrides or [])
    if cheap:
        scenarios = ("continual",)
    summaries: dict[str, Any] = {}
    with _watching(learner) as records:
        for scenario in scenarios:
            where = f"learner '{learner}' ({scenario})"
            first = _run(learner, tmp_dir / f"{scenario}-a", scenario, steps, extra, records)
            check_schema(first, where, steps=steps)
            check_trained(first, where)
            if not cheap:
                second = _run(learner, tmp_dir / f"{scenario}-b", scenario, steps, extra, records)
                check_same(first, second, where, "two runs with the same seed differ (not deterministic)")
            resumed = _run(learner, tmp_dir / f"{scenario}-r", scenario, steps, extra, records, stop_after_first_task=True)
            check_schema(resumed, where, steps=steps)
            check_same(first, resumed, where, "a run stopped after its first task and resumed differs from the uninterrupted run")
            summaries[scenario] = first
    return summaries


def run_learner(learner: str, tmp_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """One in-process run of `learner` on the kit's tiny stream (plus `overrides`, e.g.
    `scenario=continual eval.revisit=true`); its summary.json, with the results lines as `_lines`.
    For a plugin's own measurements: its FLOPs against finetune's, its forgetting."""
    from nevisbench.run.runner import run  # see _run

    run_dir = run(compose([*TINY, f"learner={learner}", f"out_dir={tmp_dir}", *(overrides or [])]))
    return _read(run_dir, {})
