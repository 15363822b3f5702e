"""What an attack on runs broke, pinned: a run folder held by one process, plugin hooks that fail
as one line without losing committed results, tampered resume files, bad weights."""

from __future__ import annotations

import fcntl
import json

import pytest
from conftest import TINY, register_learner, run_cli

from nevisbench.config import compose
from nevisbench.errors import PluginError, RunFailed
from nevisbench.run.runner import run

TWO = [*TINY, "stream.tasks=[faces,shapes]", "budget.milestones=2"]




def _lines(run_dir) -> list[dict]:
    path = run_dir / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """A two-task run killed after its first task was committed."""
    out = tmp_path_factory.mktemp("crashed")
    proc = run_cli("run", *TWO, f"out_dir={out}", "run_name=r", env_extra={"NEVISBENCH_FAULT": "after_task:0"})
    assert proc.returncode != 0
    return out / "r"


@pytest.mark.slow
def test_a_run_folder_is_held_by_one_process(crashed_run, tmp_path):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(crashed_run, run_dir)
    with open(run_dir / ".lock", "a+") as held:  # another process holds the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("pid 4242 on somehost\n")
        held.flush()
        second = run_cli("run", f"resume={run_dir}")
    assert second.returncode == 2
    assert f"run folder {run_dir} is in use by pid 4242 on somehost" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    resumed = run_cli("run", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert [line["task"] for line in _lines(run_dir)] == ["faces", "shapes"]  # each task once


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "expected"), [
    ('["a", "json", "array"]\n', "is not a task result"),
    ('{"index": 0}\n', "is not a task result (missing task"),
])
def test_a_tampered_results_line_is_one_error(crashed_run, tmp_path, damage, expected):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(crashed_run, run_dir)
    (run_dir / "results.jsonl").write_text(damage)
    proc = run_cli("run", f"resume={run_dir}")
    assert proc.returncode != 0 and expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_tampered_state_and_checkpoints_are_named(crashed_run, tmp_path):
    import shutil

    import torch

    run_dir = tmp_path / "r"
    shutil.copytree(crashed_run, run_dir)
    (state_file,) = (run_dir / "state").glob("after_task_0.pt")
    state = torch.load(state_file, weights_only=True)
    state["meter"]["not_a_field"] = 1.0
    torch.save(state, state_file)
    proc = run_cli("run", f"resume={run_dir}")
    assert proc.returncode != 0 and f"the state file {state_file} is damaged" in proc.stderr
    assert "Traceback" not in proc.stderr
    state["meter"].pop("not_a_field")
    torch.save(state, state_file)
    checkpoint = run_dir / "state" / "task_1.ckpt"
    checkpoint.write_bytes(b"\x80\x04truncated")
    proc = run_cli("run", f"resume={run_dir}")
    assert proc.returncode != 0 and f"Cannot resume from the mid-task checkpoint {checkpoint}" in proc.stderr
    assert "Delete it to restart that task from its start" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_an_empty_summary_is_not_a_finished_run(crashed_run, tmp_path):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(crashed_run, run_dir)
    (run_dir / "summary.json").write_text("")
    proc = run_cli("run", f"resume={run_dir}")
    assert proc.returncode != 0 and "summary.json is damaged" in proc.stderr and "already finished" not in proc.stdout


@pytest.mark.slow
def test_stale_temporary_files_are_cleaned_on_resume(crashed_run, tmp_path):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(crashed_run, run_dir)
    stale = run_dir / ".results.jsonl.abc123.tmp"
    stale.write_text("half a line")
    proc = run_cli("run", f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()


@pytest.mark.slow
def test_bad_weights_leave_no_run_folder(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_text("not weights")
    out = tmp_path / "runs"
    proc = run_cli("run", *TINY, f"backbone.weights={weights}", f"out_dir={out}")
    assert proc.returncode == 2 and "not a readable PyTorch state dict" in proc.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(("target", "message"), [
    ("broken_plugins:FailsInEndTask", "Learner 'broken' failed in end_task(faces): RuntimeError('lost my notes')"),
    ("broken_plugins:UnsaveableState", "Learner 'broken' failed in state_dict()"),
])
def test_a_hook_failing_after_training_keeps_the_tasks_line(monkeypatch, tmp_path, target, message):
    register_learner(monkeypatch, "broken", target)
    cfg = compose([*TWO, "learner=broken", f"out_dir={tmp_path}"])
    if "state_dict" in message:  # caught when the state is first taken, before anything trains
        with pytest.raises(PluginError, match=r"failed in state_dict\(\)"):
            run(cfg)
        return
    with pytest.raises(RunFailed) as info:
        run(cfg)
    assert message in str(info.value)
    (run_dir,) = tmp_path.iterdir()
    (line,) = _lines(run_dir)
    assert line["task"] == "faces" and line["status"] == "failed" and message in line["error"]
    assert line["test_error"] is not None  # it trained and was scored: the score is kept


@pytest.mark.slow
def test_load_state_dict_failing_at_resume_is_one_line(monkeypatch, tmp_path):
    register_learner(monkeypatch, "broken", "broken_plugins:FailsToLoadState")
    with pytest.raises(PluginError, match=r"failed in begin_task\(shapes\)"):
        run(compose([*TWO, "learner=broken", f"out_dir={tmp_path}", "run_name=r"]))
    with pytest.raises(PluginError) as info:
        run(compose([f"resume={tmp_path / 'r'}"]))
    assert str(info.value).startswith("Learner 'broken' failed in load_state_dict(): KeyError('seen_tasks') (raised at ")
    assert "broken_plugins.py:" in str(info.value)  # the plugin's own line


@pytest.mark.slow
@pytest.mark.parametrize(("target", "message"), [
    ("broken_plugins:ReturnsNoLoss", "Learner 'broken' failed in training on faces"),
    ("broken_plugins:WrongLogitShape", "expected logits of shape"),
    ("broken_plugins:NoBackboneAttribute", "has no `backbone` submodule"),
])
def test_modules_that_break_the_contract_are_one_line(monkeypatch, tmp_path, target, message):
    register_learner(monkeypatch, "broken", target)
    overrides = [*TWO, "learner=broken", f"out_dir={tmp_path}"]
    if "NoBackbone" in target:
        overrides.append("scenario=continual")
    with pytest.raises((PluginError, RunFailed)) as info:
        run(compose(overrides))
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.slow
def test_run_name_cannot_leave_out_dir(tmp_path):
    proc = run_cli("run", *TINY, f"out_dir={tmp_path}", "run_name=../escape")
    assert proc.returncode == 2 and not (tmp_path.parent / "escape").exists()


@pytest.mark.slow
def test_a_training_step_returning_none_is_a_skipped_step_whose_forward_is_still_charged(monkeypatch, tmp_path):
    register_learner(monkeypatch, "broken", "broken_plugins:ReturnsNone")
    run_dir = run(compose([*TINY, "learner=broken", "stream.tasks=[faces]", "budget.milestones=0", f"out_dir={tmp_path}"]))
    (line,) = _lines(run_dir)
    assert line["status"] == "ok" and line["steps"] == 2
    assert line["flops"]["train_forward"] > 0 and line["flops"]["train_backward"] == 0  # no loss, no backward
