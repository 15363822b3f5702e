"""W&B offline: config, per-task metrics with cumulative FLOPs, summary, read back from disk."""

from __future__ import annotations

import json
import time

import pytest
from wandb_records import read_run

from nevisbench.config import compose
from nevisbench.run.runner import run


def _read_when_complete(path, timeout: float = 60.0) -> dict:
    """W&B's service process may still be writing the offline file for a moment after run.finish()
    returns; read until the run's summary record is there."""
    deadline = time.monotonic() + timeout
    while True:
        logged = read_run(path)
        if logged["summary"].get("final_mean_error") is not None or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


@pytest.mark.slow
def test_offline_run_logs_config_tasks_and_summary(tmp_path, tiny, capsys):
    cfg = compose([*tiny, "logger=wandb", f"out_dir={tmp_path}", "stream.tasks=[digits,faces]"])
    run_dir = run(cfg)
    assert "W&B offline run at" in capsys.readouterr().out
    logs = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    logged = _read_when_complete(logs[0])
    summary = json.loads((run_dir / "summary.json").read_text())

    rows = [row for row in logged["history"] if "task/test_error" in row]
    assert [row["task/index"] for row in rows] == [0, 1]
    assert [row["task/test_error"] for row in rows] == [t["test_error"] for t in summary["tasks"]]
    assert [row["stream/cumulative_flops"] for row in rows] == [t["cumulative_flops"] for t in summary["tasks"]]
    assert logged["summary"]["mean_test_error"] == summary["mean_test_error"]
    assert logged["summary"]["total_flops"] == summary["total_flops"]
    assert logged["summary"]["backbone/name"] == summary["backbone"]["name"] == "resnet18"
    assert logged["config"]["learner"] == {"name": "finetune"}
    assert logged["config"]["stream"] == {"name": "demo", "tasks": ["digits", "faces"], "allow_missing": False}
    assert any("train/loss" in row for row in logged["history"])  # the Lightning logger shares the run
    # anytime milestones against cumulative training FLOPs, the curve table and chart, the scores
    anytime = [row for row in logged["history"] if "anytime/dev_error" in row]
    assert len(anytime) == 2 * summary["budget"]["milestones"]
    xs = [row["anytime/cumulative_train_flops"] for row in anytime]
    assert xs == sorted(xs) and xs[-1] == summary["flops"]["train"]
    (points,) = [row for row in logged["history"] if "anytime_curve_points/nrows" in row]
    assert points["anytime_curve_points/nrows"] == len(summary["anytime_curve"]) and points["anytime_curve_points/ncols"] == 4
    assert any(key.startswith("anytime_curve_table") for row in logged["history"] for key in row)  # line chart
    assert logged["summary"]["auc"] == summary["auc"]
    assert logged["summary"]["point/flops"] == summary["point"]["flops"]  # the run's x on the curve
    assert logged["summary"]["point/x"] == summary["point"]["x"] == "train+search"  # which compute that x sums
