"""`nevisbench wandb-workspace`: built and validated offline with wandb-workspaces, from the names the
W&B sink really logs (a sink's logged keys are compared with the panels' metrics)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from rich.console import Console

from nevisbench.analysis.wandb_workspace import INSTALL, build_workspace, describe
from nevisbench.cli import main
from nevisbench.run.store.loggers import WandbSink

pytest.importorskip("wandb_workspaces", reason="wandb-workspaces is not installed (pip install -e '.[test]')")


class _Recorder:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def log(self, metrics: dict[str, Any]) -> None:
        self.keys |= set(metrics)


def _logged_keys() -> set[str]:
    """The keys a real sink logs for one task line with anytime records (no W&B run behind it)."""
    sink = WandbSink.__new__(WandbSink)
    sink.run, sink._failed, sink._train_flops_before, sink.console = _Recorder(), False, 0.0, Console()
    sink.log_task({"task": "digits", "index": 0, "test_error": 0.3, "cumulative_flops": 10.0, "wall_seconds": 1.0,
                   "flops": {"train": 5.0, "eval": 1.0}, "anytime": [{"train_flops": 2.0, "dev_error": 0.5, "fraction": 0.5}]})
    return sink.run.keys


def test_workspace_draws_what_the_logger_logs_grouped_by_learner():
    plan = describe(build_workspace("me", "nevis", "curve"))
    panels = {p["title"]: p for s in plan["sections"] for p in s["panels"]}
    assert [s["name"] for s in plan["sections"]] == ["compute-performance", "per task", "anytime"]
    scatter = panels["final mean test error vs counted compute (one dot per run)"]
    assert scatter["type"] == "Scatter Plot" and scatter["log_x"]
    assert (scatter["x"], scatter["y"]) == ("summary:point/flops", ["summary:final_mean_error"])
    logged = _logged_keys()
    for panel in panels.values():
        if panel["type"] == "Run History Line Plot":
            assert panel["x"] in logged, panel
            assert all(y in logged for y in panel["y"] if not y.startswith("/")), panel
    assert "task_error/digits" in logged and "/task_error/.*/" in panels["each task's test error"]["y"]
    assert panels["anytime: dev error vs cumulative training FLOPs"]["group_by"] == "choices.value.learner"


def test_command_offline_prints_what_it_would_create_and_creates_nothing(capsys, monkeypatch):
    monkeypatch.setattr("wandb_workspaces.workspaces.Workspace.save", lambda self: pytest.fail("must not save offline"))
    assert main(["wandb-workspace", "--entity", "me", "--project", "nevis"]) == 0
    out = capsys.readouterr().out
    assert "Would create the W&B workspace" in out and "Not created (no WANDB_API_KEY" in out
    plan = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert (plan["entity"], plan["project"], plan["group_by"]) == ("me", "nevis", "choices.learner")


def test_missing_library_and_empty_names_are_one_line_errors(capsys, monkeypatch):
    assert main(["wandb-workspace", "--entity", " ", "--project", "nevis"]) == 2
    assert "--entity is empty" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    assert main(["wandb-workspace", "--entity", "me", "--project", "nevis"]) == 2
    err = capsys.readouterr().err
    assert "wandb-workspaces" in err and INSTALL.split()[0] in err and "Traceback" not in err
