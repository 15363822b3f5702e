"""Resume checks the run folder before anything resumes: config.yaml against the digest written
when the run started and against the state it resumes from, and summary.json against the
committed results lines (issue 34: an edited lr was accepted, and `{"tasks": []}` was "finished")."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, run_cli, without_timing

RUN = [*TINY, "stream.tasks=[digits,faces]", "budget.milestones=0", "run_name=r"]


def _killed_after_first_task(tmp_path):
    killed = run_cli("run", *RUN, f"out_dir={tmp_path}", fault="after_task:0")
    assert killed.returncode != 0
    run_dir = tmp_path / "r"
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 1
    return run_dir


def _edit_lr(run_dir):
    config = run_dir / "config.yaml"
    text = config.read_text()
    assert "  lr: 0.05\n" in text
    config.write_text(text.replace("  lr: 0.05\n", "  lr: 0.5\n"))


@pytest.mark.slow
def test_an_edited_config_is_refused_on_resume(tmp_path):
    run_dir = _killed_after_first_task(tmp_path)
    _edit_lr(run_dir)
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 2 and "was changed after the run started" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 1  # nothing resumed


@pytest.mark.slow
def test_an_edited_config_is_refused_by_the_state_even_without_the_digest_file(tmp_path):
    run_dir = _killed_after_first_task(tmp_path)
    (run_dir / "state" / "config.sha256").unlink()
    _edit_lr(run_dir)
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 2 and "is not the config the state after task 0" in resumed.stderr
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_an_old_run_folder_without_a_digest_still_resumes_and_says_so(tmp_path):
    whole = run_cli("run", *RUN, f"out_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    run_dir = _killed_after_first_task(tmp_path)
    (run_dir / "state" / "config.sha256").unlink()
    state_path = run_dir / "state" / "after_task_0.pt"
    state = torch.load(state_path, weights_only=True)
    del state["config_sha256"]  # as an older nevisbench saved it
    torch.save(state, state_path)
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert "has no digest of its config.yaml" in resumed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((tmp_path / "whole" / "r" / "summary.json").read_text())
    assert without_timing(summary) == without_timing(expected)


@pytest.mark.slow
def test_a_summary_that_does_not_match_the_results_is_not_taken_as_finished(tmp_path):
    run_dir = _killed_after_first_task(tmp_path)
    (run_dir / "summary.json").write_text(json.dumps({"learner": "x", "tasks": []}))
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 2, resumed.stdout
    assert "summary.json does not match" in resumed.stderr and "already finished" not in resumed.stdout
    (run_dir / "summary.json").unlink()
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    finished = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({"learner": "x", "tasks": []}))  # a finished run: rebuilt
    rebuilt = run_cli("run", f"resume={run_dir}")
    assert rebuilt.returncode == 0 and "rebuilt" in rebuilt.stdout, rebuilt.stderr
    assert without_timing(json.loads((run_dir / "summary.json").read_text())) == without_timing(finished)
