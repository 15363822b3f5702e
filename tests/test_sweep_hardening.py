"""Sweeps trust their run folders only as far as they check: a folder deleted while its run ran is
never a finished job, a recreated job's old run of other settings is refused, and a sweep started
with SIGINT ignored still stops on `kill -INT` (issue 34)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import TINY, register_learner, run_cli

from nevisbench.config import compose
from nevisbench.errors import WriteFailed
from nevisbench.run.store.results import ResultsStore
from nevisbench.sweep.jobs import finished_run

SWEEP = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16", "train.max_steps=2",
         "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0", "launcher=local", "launcher.jobs=1"]


@pytest.mark.parametrize("recreate", [False, True])
def test_a_run_writes_nothing_into_a_folder_deleted_while_it_held_it(tmp_path, recreate):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    store = ResultsStore(run_dir)
    store.hold(open(run_dir / ".lock", "a+"))
    store.append({"task": "digits"})
    shutil.rmtree(run_dir)
    if recreate:
        run_dir.mkdir()  # e.g. recreated by Lightning's folder creation: another folder
    with pytest.raises(WriteFailed, match="was deleted or replaced while this run held it"):
        store.append({"task": "faces"})
    assert not (run_dir / "results.jsonl").exists()


def test_a_summary_without_config_or_results_to_match_is_not_a_finished_run(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    line = {"task": "digits", "status": "ok"}
    (run_dir / "results.jsonl").write_text(json.dumps(line) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"tasks": [line]}))
    assert not finished_run(run_dir)  # no config.yaml
    (run_dir / "config.yaml").write_text("seed: 0\n")
    assert finished_run(run_dir)
    (run_dir / "summary.json").write_text(json.dumps({"learner": "x", "tasks": []}))
    assert not finished_run(run_dir)


@pytest.mark.slow
def test_a_run_whose_folder_is_deleted_while_it_runs_stops_and_leaves_no_finished_run(tmp_path, monkeypatch):
    register_learner(monkeypatch, "deleter", "failing_learners:DeletesItsRunFolder")
    monkeypatch.setenv("NEVISBENCH_TEST_RUN_DIR", str(tmp_path / "r"))
    cfg = compose([*TINY, "learner=deleter", "stream.tasks=[digits,faces]", "budget.milestones=0", "run_name=r",
                   f"out_dir={tmp_path}"])
    from nevisbench.run.runner import run

    with pytest.raises(WriteFailed, match="was deleted or replaced"):
        run(cfg)
    assert not finished_run(tmp_path / "r") and not (tmp_path / "r" / "summary.json").exists()
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.slow
def test_old_runs_of_an_edited_fixed_override_do_not_count_as_the_new_grids_jobs(tmp_path):
    sweep_dir = tmp_path / "s"
    done = run_cli("sweep", *SWEEP, "train.lr=0.05", "seed=0,1", f"sweep_dir={sweep_dir}", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    info = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    info["grid"]["train.lr"] = ["0.5"]  # a fixed override edited
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    told = run_cli("sweep", f"resume={sweep_dir}")
    assert told.returncode == 2 and "restore sweep.yaml, or delete that line" in told.stderr
    (sweep_dir / "jobs.jsonl").write_text("")  # following that advice
    logs = {p.name: p.stat().st_size for p in (sweep_dir / "logs").iterdir()}
    again = run_cli("sweep", f"resume={sweep_dir}")
    assert again.returncode == 2, again.stdout
    assert "was run with other settings than sweep.yaml's grid now gives job" in again.stderr
    assert "train.lr (0.05 -> 0.5)" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert {p.name: p.stat().st_size for p in (sweep_dir / "logs").iterdir()} == logs  # nothing launched


@pytest.mark.slow
def test_a_sweep_started_with_sigint_ignored_still_stops_on_kill_int(tmp_path):
    """`nevisbench sweep ... &` from a script inherits SIGINT ignored; `kill -INT` must still stop it."""
    sweep_dir = tmp_path / "s"
    command = [sys.executable, "-m", "nevisbench", "sweep", *SWEEP, "train.max_steps=400", "seed=0,1",
               f"sweep_dir={sweep_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not list((sweep_dir / "runs").glob("*/config.yaml")) if (sweep_dir / "runs").is_dir() else True:
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 130, out + err
    assert "interrupted" in err
    assert not list((sweep_dir / "runs").glob("*/summary.json"))  # stopped, not run to its end
