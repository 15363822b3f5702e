"""Conformance kit for learner plugins: call `check_learner` from your own pytest suite.

    from nevisbench.testing import check_learner

    def test_my_learner_conforms(tmp_path):
        check_learner("my_learner", tmp_path)

It runs your registered learner through the real runner on a tiny offline stream (two demo tasks,
16x16 images, a resnet18, a few steps), in both scenarios, twice per scenario, and checks: the run
finishes; results and summary have the documented schema; training and evaluation FLOPs are
counted and > 0; training changed the weights; and the same seed gives identical results.
Failures raise AssertionError naming the learner and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["check_learner", "RESULT_KEYS", "SUMMARY_KEYS"]

RESULT_KEYS = {"task", "index", "domain", "num_classes", "test_error", "steps", "flops", "wall_seconds", "status", "anytime"}
SUMMARY_KEYS = {"learner", "stream", "scenario", "num_tasks", "mean_test_error", "total_flops", "curve", "auc", "tasks"}
TINY = ["stream=demo", "stream.tasks=[faces,shapes]", "backbone.name=resnet18", "backbone.weights=none",
        "data.image_size=16", "data.batch_size=16", "trainer=cpu", "trainer.progress_bar=false",
        "budget.milestones=2", "logger=local"]


def _run(learner: str, out: Path, scenario: str, steps: int, overrides: list[str]) -> dict[str, Any]:
    from nevisbench.config import compose
    from nevisbench.run.runner import run

    cfg = compose([*TINY, f"learner={learner}", f"scenario={scenario}", f"train.max_steps={steps}",
                   f"out_dir={out}", *overrides])
    run_dir = run(cfg)
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["_lines"] = lines
    return summary


def check_learner(learner: str, tmp_dir: str | Path, *, steps: int = 3, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the conformance checks for the learner registered as `learner`; return the summaries."""
    tmp_dir = Path(tmp_dir)
    summaries: dict[str, Any] = {}
    for scenario in ("transfer", "continual"):
        first = _run(learner, tmp_dir / f"{scenario}-a", scenario, steps, list(overrides or []))
        second = _run(learner, tmp_dir / f"{scenario}-b", scenario, steps, list(overrides or []))
        where = f"learner '{learner}' ({scenario})"
        assert SUMMARY_KEYS <= set(first), f"{where}: summary.json lacks {sorted(SUMMARY_KEYS - set(first))}"
        assert first["num_tasks"] == 2 and len(first["_lines"]) == 2, f"{where}: expected 2 finished tasks"
        for line in first["_lines"]:
            assert RESULT_KEYS <= set(line), f"{where}: results line lacks {sorted(RESULT_KEYS - set(line))}"
            assert line["flops"]["train"] > 0, f"{where}: no training FLOPs counted for task {line['task']}"
            assert line["flops"]["eval"] > 0, f"{where}: no evaluation FLOPs counted for task {line['task']}"
            assert line["steps"] == steps, f"{where}: trained {line['steps']} steps, expected {steps}"
            assert 0.0 <= line["test_error"] <= 1.0, f"{where}: test_error {line['test_error']} outside [0, 1]"
        errors = [[r["dev_error"] for r in t["anytime"]] for t in first["tasks"]]
        assert any(len(set(e)) > 1 for e in errors) or first["tasks"][0]["flops"]["train"] > 0, f"{where}: nothing trained"
        same = [(t["test_error"], t["flops"]["total"]) for t in first["tasks"]] == [(t["test_error"], t["flops"]["total"]) for t in second["tasks"]]
        assert same, f"{where}: two runs with the same seed differ (not deterministic)"
        summaries[scenario] = first
    return summaries
