"""Runs that survive: SIGKILL at several points and resume, Ctrl-C, NaN losses, bad environments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, run_cli, without_timing

# three tasks, 6 steps each, a mid-task checkpoint every 2 steps, 3 milestones: deterministic on CPU
RUN = [*TINY, "train.max_steps=6", "train.checkpoint_every_n_steps=2", "budget.milestones=3",
       "stream.tasks=[textures,faces,shapes]", "scenario=continual", "run_name=r"]






def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    proc = run_cli("run", *RUN, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "r" / "summary.json").read_text())


@pytest.mark.slow
def test_sigkill_between_tasks_mid_task_and_while_writing_then_resume_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "r"
    killed = run_cli("run", *RUN, f"out_dir={tmp_path}", fault="after_task:1")  # after the 2nd task
    assert killed.returncode == -signal.SIGKILL
    first_two = (run_dir / "results.jsonl").read_bytes()
    assert len(_lines(run_dir)) == 2

    killed = run_cli("run", f"resume={run_dir}", fault="step:2:3")  # mid-task, after the checkpoint at step 2
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / "state" / "task_2.ckpt").is_file()
    assert (run_dir / "results.jsonl").read_bytes() == first_two

    killed = run_cli("run", f"resume={run_dir}", fault="write:results.jsonl")  # while committing task 3
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / "results.jsonl").read_bytes() == first_two  # old file intact, never torn

    done = run_cli("run", f"resume={run_dir}")
    assert done.returncode == 0, done.stderr
    assert "Resuming r: 2 of 3 tasks finished" in done.stdout
    lines = _lines(run_dir)
    assert [line["task"] for line in lines] == ["textures", "faces", "shapes"]  # each exactly once
    assert (run_dir / "results.jsonl").read_bytes().startswith(first_two)  # kept byte for byte
    summary = json.loads((run_dir / "summary.json").read_text())
    assert without_timing(summary) == without_timing(reference)
    assert not list((run_dir / "state").glob("task_*.ckpt"))  # mid-task checkpoints are cleaned up


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing(tmp_path):
    proc = run_cli("run", *RUN, "stream.tasks=[faces]", f"out_dir={tmp_path}")
    assert proc.returncode == 0
    run_dir = tmp_path / "r"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    again = run_cli("run", f"resume={run_dir}")
    assert again.returncode == 0 and "already finished; nothing to do" in again.stdout
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_resuming_with_a_different_learner_is_refused_naming_it(tmp_path):
    proc = run_cli("run", *RUN, "stream.tasks=[faces]", f"out_dir={tmp_path}", fault="after_task:0")
    assert proc.returncode == -signal.SIGKILL
    refused = run_cli("run", f"resume={tmp_path / 'r'}", "learner=conv_prune")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "Cannot resume" in refused.stderr and "learner" in refused.stderr
    allowed = run_cli("run", f"resume={tmp_path / 'r'}", "trainer.progress_bar=true")  # harmless keys may change
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.slow
def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    proc = run_cli("run", f"resume={tmp_path}")
    assert proc.returncode == 2 and "is not a nevisbench run folder (no config.yaml)" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_finished_tasks_and_says_how_to_resume(tmp_path):
    # 100 steps a task: the second task is still training when Ctrl-C comes, a second after the first ended
    args = [sys.executable, "-m", "nevisbench", "run", *RUN, "train.max_steps=100", f"out_dir={tmp_path}"]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("NEVISBENCH_FAULT", None)
    # a shell starts background jobs with SIGINT ignored, and children inherit that (Python then installs
    # no KeyboardInterrupt handler): the run gets the default disposition, as one started at a terminal
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = tmp_path / "r" / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (results.exists() and results.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # now inside the second task's training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Resume with: nevisbench run resume={tmp_path / 'r'}" in err
    assert "Traceback" not in err + out
    assert len(_lines(tmp_path / "r")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_nan_loss_fails_the_task_clearly(tmp_path, policy):
    proc = run_cli("run", *TINY, "train.lr=1e30", "stream.tasks=[faces,shapes]", f"on_failure={policy}", f"out_dir={tmp_path}")
    lines = _lines(next(tmp_path.iterdir()))
    assert lines[0]["status"] == "failed" and lines[0]["test_error"] is None
    error = lines[0]["error"]  # the loss, or a milestone's dev outputs when they diverge first (issue 34)
    assert ("task 'faces': the loss is" in error or "task 'faces': the model's outputs are not finite" in error)
    assert "learning rate" in error
    assert "Traceback" not in proc.stderr + proc.stdout
    if policy == "stop":
        assert proc.returncode == 1 and len(lines) == 1 and "on_failure=stop" in proc.stderr
    else:
        assert proc.returncode == 0 and len(lines) == 2
        summary = json.loads((next(tmp_path.iterdir()) / "summary.json").read_text())
        assert "faces" in summary["failed_tasks"]


@pytest.mark.slow
def test_wandb_failing_mid_run_never_kills_the_run(tmp_path, tiny, monkeypatch, capsys):
    import wandb.sdk.wandb_run

    from nevisbench.config import compose
    from nevisbench.run.runner import run

    def broken_log(self, *args, **kwargs):
        raise ConnectionError("W&B is unreachable")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", broken_log)
    run_dir = run(compose([*tiny, "logger=wandb", "stream.tasks=[faces,shapes]", f"out_dir={tmp_path}"]))
    assert (run_dir / "summary.json").is_file() and len(_lines(run_dir)) == 2
    out = capsys.readouterr().out
    assert out.count("local results files remain the source of truth") == 1  # said once


@pytest.mark.slow
def test_an_out_dir_that_cannot_be_created_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("run", *TINY, f"out_dir={blocker}/sub")
    assert proc.returncode == 2 and "Cannot create out_dir" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_a_finished_run_whose_summary_is_lost_gets_it_rebuilt_from_its_results_lines(tmp_path, loss):
    """A finished run keeps no resume state; its results lines hold every task, and the stream's
    FLOP tally is their sum: the rebuilt summary is the original one (FLOPs to the last bit)."""
    from nevisbench.config import compose
    from nevisbench.run.runner import run

    run_dir = run(compose([*TINY, "stream.tasks=[faces,shapes]", f"out_dir={tmp_path}", "run_name=r"]))
    original = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "results.jsonl").read_bytes()
    assert not (run_dir / "state").exists()  # the state after task 0 is gone: resume cannot restore from it
    if loss == "deleted":
        (run_dir / "summary.json").unlink()
    else:
        (run_dir / "summary.json").write_text('{"tasks": [')
    done = run_cli("run", f"resume={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    missing = "missing" if loss == "deleted" else "unreadable"
    assert f"summary.json is {missing}: it is rebuilt from the committed lines" in " ".join(done.stdout.split())
    rebuilt = json.loads((run_dir / "summary.json").read_text())
    assert without_timing(rebuilt) == without_timing(original)
    assert rebuilt["flops"]["seconds"] == original["flops"]["seconds"]  # even the tally's seconds: the lines' sum
    assert (run_dir / "results.jsonl").read_bytes() == lines  # nothing committed is rewritten
