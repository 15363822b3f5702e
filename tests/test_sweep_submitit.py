"""The slurm launcher through submitit's own local executor (real submitit code, no SLURM):
an array submission, a preemption signal, the checkpoint that requeues the job with `resume=`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from submitit.helpers import DelayedSubmission

from nevisbench.sweep.grid import job_name, parse_sweep
from nevisbench.sweep.jobs import Job, SweepFolder
from nevisbench.sweep.launchers import load_launcher
from nevisbench.sweep.slurm import SweepJob, submit_slurm

TINY = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16", "train.max_steps=2",
        "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0"]


def _folder(tmp_path: Path, overrides: list[str], launcher: dict | None = None, **fields) -> SweepFolder:
    """A sweep folder as `nevisbench sweep` records it (sweep.yaml's grid, the jobs it gives)."""
    from nevisbench.sweep.sweeper import _grid_values

    grid = parse_sweep(overrides)
    jobs = [Job(index=i, name=job_name(i, o, grid.swept), overrides=[*o, "logger.group=sweep"], **fields)
            for i, o in enumerate(grid.jobs)]
    info = {"command": "test", "grid": _grid_values(grid), "swept": list(grid.swept), "group": "sweep",
            "launcher": launcher}
    return SweepFolder.create(tmp_path / "sweep", info, jobs)


def _task_pid(controller: int) -> int:
    """The job's process: the child of submitit's local controller (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == controller:
            return int(stat.parent.name)
    raise AssertionError("submitit's local controller has no task process")


def test_checkpoint_resubmits_the_job_as_a_resumed_run(tmp_path):
    folder = _folder(tmp_path, TINY)
    job = SweepJob(str(folder.path))
    assert job.command(0)[:2] == ["run", "learner=finetune"]  # nothing ran yet: a fresh run
    run_dir = folder.run_dir(folder.jobs[0])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")  # the run started, then the node was preempted
    delayed = job.checkpoint(0)
    assert isinstance(delayed, DelayedSubmission) and isinstance(delayed.function, SweepJob)
    assert delayed.args == (0,) and delayed.kwargs == {"resume": True}
    assert delayed.function.command(*delayed.args, **delayed.kwargs) == ["run", f"resume={run_dir}"]


@pytest.mark.slow
def test_submitit_requeue_after_preemption_resumes_the_run(tmp_path):
    # 200 steps: the preemption lands mid-training (a 2-step run could finish, summary and all,
    # before the signal reached it, and the requeued attempt rightly found it done)
    folder = _folder(tmp_path, [*TINY, "train.max_steps=200"])
    cfg = load_launcher({"launcher": "slurm", "launcher.cluster": "local"})
    (handle,) = submit_slurm(folder, folder.jobs, cfg)
    run_dir = folder.run_dir(folder.jobs[0])
    deadline = time.monotonic() + 180
    while not (run_dir / "config.yaml").is_file():  # the run has started: preempt it
        assert time.monotonic() < deadline and not handle.done(), handle.stdout()
        time.sleep(0.2)
    os.kill(_task_pid(handle._process.pid), signal.SIGUSR2)  # what SLURM sends the job on preemption
    deadline = time.monotonic() + 240
    while not handle.done():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert handle.result() == "done", handle.stdout()
    out = handle.stdout()
    assert "Calling checkpoint method" in out and "requeued: job 000 continues" in out
    (job,) = [json.loads(line) for line in (folder.path / "jobs.jsonl").read_text().splitlines()]
    assert job["state"] == "done" and job["attempts"] == 2 and job["job_id"] == str(handle.job_id)
    assert job["command"] == ["run", f"resume={run_dir}"]
    log = folder.log_path(folder.jobs[0]).read_text()
    assert "=== attempt 1: nevisbench run learner=finetune" in log and "=== attempt 2: nevisbench run resume=" in log
    results = (run_dir / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["task"] for line in results] == ["digits"]  # one task, run to its end once
    assert (run_dir / "summary.json").is_file()
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no second run folder


def _descendants(pid: int) -> list[int]:
    """`pid`'s child processes, their children, and so on (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int) -> None:
    for victim in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _jobs(sweep_dir: Path) -> dict[str, dict]:
    try:
        return {j["name"]: j for j in map(json.loads, (sweep_dir / "jobs.jsonl").read_text().splitlines())}
    except (OSError, json.JSONDecodeError):
        return {}


# Two jobs long enough (150 steps) to be still running while the sweep is killed and started again.
LONG = [*TINY[:4], "train.max_steps=600", *TINY[5:], "seed=0,1", "launcher=slurm", "launcher.cluster=local"]


@pytest.mark.slow
def test_rerun_asks_submitit_and_never_submits_a_running_job_twice(tmp_path):
    """The sweep process dies while its jobs run on the engine (submitit's local executor: its
    controllers outlive the sweep, as SLURM jobs do); job 1's controller dies too (a node failure).
    The rerun asks submitit: job 0 still running is watched, not submitted again; job 1 is
    submitted again and continues its run with `resume=`."""
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    first = subprocess.Popen([sys.executable, "-m", "nevisbench", "sweep", *LONG, f"sweep_dir={sweep_dir}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    ids: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 180
        while True:  # both runs have started on the engine, their ids are recorded
            jobs = _jobs(sweep_dir)
            if len(jobs) == 2 and all(j["job_id"] and (sweep_dir / "runs" / n / "config.yaml").is_file()
                                      for n, j in jobs.items()):
                break
            assert time.monotonic() < deadline and first.poll() is None, first.stdout.read().decode()
            time.sleep(0.2)
        ids = {name: job["job_id"] for name, job in jobs.items()}
        os.kill(first.pid, signal.SIGKILL)  # the sweep process only: the jobs run on
        first.wait()
        running, lost = sorted(ids)
        _kill_tree(int(ids[lost]))  # job 1's controller, its task and its run: gone

        status = run_cli("sweep", "status", str(sweep_dir))
        assert status.returncode == 0, status.stderr
        line = next(row for row in status.stdout.splitlines() if running in row)
        assert f"RUNNING {ids[running]}" in line and "running" in line
        line = next(row for row in status.stdout.splitlines() if lost in row)
        assert f"ABSENT {ids[lost]}" in line and "stale" in line
        assert f"1 job(s) still in flight (queued or running on the engine): {running}." in status.stdout

        again = run_cli("sweep", *LONG, f"sweep_dir={sweep_dir}", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (f"1 job(s) still in flight on submitit's local executor, not submitted again: {running} "
                f"(RUNNING {ids[running]})") in again.stdout
        assert "launcher=slurm: 1 job(s) submitted" in again.stdout
        after = _jobs(sweep_dir)
        assert {j["state"] for j in after.values()} == {"done"}
        assert after[running]["job_id"] == ids[running] and after[running]["attempts"] == 1  # ran once
        assert after[lost]["job_id"] not in (None, ids[lost]) and after[lost]["attempts"] == 2
        assert after[lost]["command"] == ["run", f"resume={sweep_dir / 'runs' / lost}"]  # continued
        # submitit holds three submissions: the two first ones and job 1's second, none for job 0
        submissions = {p.parent.name for p in (sweep_dir / "submitit").glob("*/*_submitted.pkl")}
        assert submissions == {ids[running], ids[lost], after[lost]["job_id"]}
        assert (sweep_dir / "logs" / f"{running}.log").read_text().count("=== attempt") == 1
        for name in after:
            results = (sweep_dir / "runs" / name / "results.jsonl").read_text().splitlines()
            assert [json.loads(r)["task"] for r in results] == ["digits"]
        assert len((sweep_dir / "comparison.csv").read_text().splitlines()) == 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        for job_id in ids.values():
            _kill_tree(int(job_id))


SACCT = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
cat <<'OUT'
JobID|State|NodeList
4242_0|RUNNING|node1
4242_0.batch|RUNNING|node1
4242_1|PENDING|None assigned
4242_2|REQUEUED|node2
4242_3|FAILED|node2
4242_4|CANCELLED by 1000|node3
OUT
"""


@pytest.mark.slow
def test_on_slurm_the_states_come_from_sacct(tmp_path, monkeypatch):
    """The SLURM path with `sacct` faked on PATH: one call for all the recorded ids, parsed by
    submitit's own parser; PENDING/RUNNING/REQUEUED are in flight,
    a failed, cancelled or unknown (absent from sacct) job is not, and `sweep status` says so."""
    from nevisbench.sweep.slurm_states import engine_states

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(SACCT)
    (bin_dir / "squeue").write_text("#!/bin/sh\n")  # SLURM's queue: empty (sacct has the answers)
    for tool in ("sacct", "squeue"):
        (bin_dir / tool).chmod(0o755)
    no_slurm = tmp_path / "no-slurm"  # a PATH without SLURM's tools (this machine may have them)
    no_slurm.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")  # the fakes come first
    folder = _folder(tmp_path, [*TINY, "seed=range(0,7)"], launcher={"name": "slurm"}, state="pending")
    ids = {job.index: f"4242_{job.index}" for job in folder.jobs if job.index != 6}  # 6: never submitted
    folder.update_many({i: {"job_id": job_id} for i, job_id in ids.items()} | {5: {"job_id": ids[5], "state": "running"}})
    names = {job.index: job.name for job in folder.jobs}
    cfg = load_launcher({"launcher": "slurm"})
    found = engine_states(folder, folder.jobs, cfg)
    assert {i: e.state for i, e in found.items()} == {0: "RUNNING", 1: "PENDING", 2: "REQUEUED", 3: "FAILED",
                                                      4: "CANCELLED", 5: "UNKNOWN"}
    assert [i for i, e in found.items() if e.in_flight] == [0, 1, 2]
    calls = (bin_dir / "calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("-o JobID,State,NodeList --parsable2 -j 4242")

    status = run_cli("sweep", "status", str(folder.path), env_extra={"PATH": os.environ["PATH"]})
    assert status.returncode == 0, status.stderr
    rows = {line.split("│")[2].strip(): line for line in status.stdout.splitlines() if line.count("│") > 5}
    for i, shown in enumerate(["RUNNING 4242_0", "PENDING 4242_1", "REQUEUED 4242_2", "FAILED 4242_3",
                               "CANCELLED 4242_4", "UNKNOWN 4242_5"]):
        assert shown in rows[names[i]], rows
    assert "stale" in rows[names[5]]  # marked running, yet SLURM has no such job
    assert (f"3 job(s) still in flight (queued or running on the engine): {names[0]}, {names[1]}, {names[2]}."
            in status.stdout)
    assert "sacct" not in status.stdout

    status = run_cli("sweep", "status", str(folder.path), env_extra={"PATH": str(no_slurm)})  # no SLURM at all
    assert status.returncode == 0, status.stderr
    assert "Cannot ask SLURM about the jobs submitted before (no `sacct` on PATH)" in status.stdout
    assert "UNKNOWN 4242_0" in status.stdout and "still in flight" not in status.stdout


@pytest.mark.slow
def test_a_ddp_job_wanting_more_gpus_than_a_node_has_is_refused_before_anything(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_cli("sweep", *TINY, "trainer=default", "trainer.devices=1,2", "launcher=slurm", "launcher.cluster=local",
                   "launcher.gpus_per_node=1", f"sweep_dir={sweep_dir}")
    assert done.returncode == 2, done.stderr
    assert "Sweep job 1" in done.stderr and "trains on 2 devices but launcher.gpus_per_node=1" in done.stderr
    assert "Traceback" not in done.stderr and not sweep_dir.exists()


@pytest.mark.slow
def test_a_sweep_jobs_run_that_inherited_sigint_ignored_still_stops_on_ctrl_c(tmp_path):
    """Started from the background of a non-interactive shell (nohup, `cmd &`, CI runners), a
    process inherits SIGINT ignored; a sweep job's run takes it back, so the sweep's Ctrl-C (the
    stop before a requeue) stops it, keeping its folder for the resume, instead of it running on."""
    import subprocess
    import sys

    from nevisbench.run.store.run_folder import EXACT_RUN_DIR_ENV

    command = [sys.executable, "-m", "nevisbench", "run", *TINY, "train.max_steps=400", "run_name=r", f"out_dir={tmp_path}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, EXACT_RUN_DIR_ENV: "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not (tmp_path / "r" / "config.yaml").is_file():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and "interrupted" in out and "nevisbench run resume=" in out, out
    assert not (tmp_path / "r" / "summary.json").exists()  # stopped, not run to its end
