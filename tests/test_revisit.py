"""Revisit evaluation (eval.revisit=true): earlier tasks scored again after each task, charged as
evaluation, restored by resume; and a learner drawing earlier tasks' data through context.data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, register_learner, run_cli, without_timing

from nevisbench.config import compose
from nevisbench.run.runner import run
from nevisbench.run.store.metrics import METRICS

STREAM = [*TINY, "stream.tasks=[digits,faces,shapes]", "scenario=continual", "budget.milestones=0", "run_name=r"]


def _run(tmp_path: Path, *extra: str) -> tuple[dict, list[dict]]:
    run_dir = run(compose([*STREAM, f"out_dir={tmp_path}", *extra]))
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "summary.json").read_text()), lines


@pytest.mark.slow
def test_revisit_fills_the_accuracy_matrix_and_is_charged_as_evaluation(tmp_path):
    summary, lines = _run(tmp_path / "on", "eval.revisit=true")
    plain, plain_lines = _run(tmp_path / "off")
    assert "revisit" not in lines[0]  # nothing earlier to revisit
    assert [line["revisit"]["tasks"] for line in lines[1:]] == [["digits"], ["digits", "faces"]]
    matrix = summary["continual"]["accuracy_matrix"]
    assert all(matrix[i][j] is not None for i in range(3) for j in range(i + 1))
    assert all(matrix[i][j] is None for i in range(3) for j in range(i + 1, 3))
    assert matrix[2][0] == pytest.approx(1 - lines[2]["revisit"]["test_error"][0])
    assert matrix[1][1] == pytest.approx(1 - lines[1]["test_error"])
    for key in ("average_accuracy", "backward_transfer", "forgetting"):
        assert isinstance(summary["continual"][key], float)
    # the same training, the same test scores; the revisits are evaluation compute, exactly
    for on, off in zip(lines, plain_lines, strict=False):
        assert on["test_error"] == off["test_error"] and on["flops"]["train"] == off["flops"]["train"]
        extra = on.get("revisit", {}).get("flops", 0.0)
        measured = sum((on.get(metric.name) or {}).get("flops", 0.0) for metric in METRICS)  # the metrics' own measures
        assert on["flops"]["eval"] == pytest.approx(off["flops"]["eval"] + extra + measured, rel=1e-12)
        assert extra > 0 or on["index"] == 0
    assert "continual" not in plain
    assert summary["point"]["flops"] == plain["point"]["flops"]  # evaluation is off the curve's x


@pytest.mark.slow
def test_revisit_is_refused_in_the_transfer_scenario():
    proc = run_cli("run", "eval.revisit=true", "scenario=transfer")
    assert proc.returncode == 2 and "eval.revisit=true needs scenario=continual" in proc.stderr


@pytest.mark.slow
def test_a_revisiting_run_killed_after_a_task_resumes_to_the_same_summary(tmp_path):
    args = ["run", *STREAM, "eval.revisit=true"]
    whole = run_cli(*args, f"out_dir={tmp_path / 'a'}")
    assert whole.returncode == 0, whole.stderr
    env = {**os.environ, "NEVISBENCH_FAULT": "after_task:1", "COLUMNS": "200"}
    killed = subprocess.run([sys.executable, "-m", "nevisbench", *args, f"out_dir={tmp_path / 'b'}"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0
    resumed = run_cli("run", f"resume={tmp_path / 'b' / 'r'}")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((tmp_path / x / "r" / "summary.json").read_text()) for x in "ab")
    assert without_timing(a) == without_timing(b)


@pytest.mark.slow
def test_a_learner_draws_earlier_tasks_training_data(tmp_path, monkeypatch):
    register_learner(monkeypatch, "replay_probe", "platform_learners:ReplayProbe")
    summary, lines = _run(tmp_path, "learner=replay_probe", "eval.revisit=true")
    report = [line["learner_report"] for line in lines]
    assert [r["tasks_seen"] for r in report] == [["digits"], ["digits", "faces"], ["digits", "faces", "shapes"]]
    assert report[2]["drawn"] == {"digits": 4, "faces": 4, "shapes": 4}
    assert report[2]["refused_future"] and report[0]["refused_future"]
