"""The slurm launcher on a real one-node SLURM (`bash .ci/slurm.sh`, as root: Debian's slurm-wlm,
munge, slurmdbd, MariaDB on 127.0.0.1; `.ci/run` brings it up). Tiny jobs (one task, a few steps,
16 px), at most 2 SLURM CPUs. Where SLURM is not installed (no `sbatch`) every test skips, saying so.

What a real SLURM does that the local executor does not: sbatch refuses a GPU on a CPU partition;
`scancel` ends a job from outside; SIGUSR2 (`scancel --signal=USR2`, as on preemption) makes
submitit requeue it; without slurmdbd `sacct` answers "accounting storage is disabled".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(shutil.which("sbatch") is None,
                                 reason="no SLURM here (no `sbatch` on PATH); as root, `bash .ci/slurm.sh` brings one up")]

ROOT = Path(__file__).resolve().parents[1]
JOB = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16", "trainer=cpu",
       "trainer.progress_bar=false", "budget.milestones=0"]
CPU_PARTITION = ["launcher=slurm", "launcher.gpus_per_node=0", "launcher.mem_gb=null", "launcher.timeout_min=30"]


def _jobs(sweep_dir: Path) -> dict[str, dict]:
    try:
        return {j["name"]: j for j in map(json.loads, (sweep_dir / "jobs.jsonl").read_text().splitlines())}
    except (OSError, json.JSONDecodeError):
        return {}


def _slurm_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i|%T"], capture_output=True,
                         text=True).stdout
    states = dict(line.split("|") for line in out.splitlines() if "|" in line)
    return states.get(job_id, "GONE")


def _wait(condition, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {process.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "nevisbench", "sweep", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _submissions(sweep_dir: Path) -> set[str]:
    """Every SLURM job submitted for the sweep: submitit pickles each one's call as <id>_submitted.pkl."""
    return {p.name.removesuffix("_submitted.pkl") for p in (sweep_dir / "submitit").glob("*/*_submitted.pkl")}


@pytest.fixture
def cancel_leftovers():
    ids: list[str] = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", job_id.split("_")[0]], capture_output=True)


@pytest.mark.slow
def test_default_launcher_on_a_cpu_partition_is_one_line_with_the_fix(tmp_path):
    done = run_cli("sweep", *JOB, "train.max_steps=2", "seed=0,1", "launcher=slurm", f"sweep_dir={tmp_path / 's'}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "sbatch refused the jobs: Invalid generic resource (gres) specification" in done.stderr
    assert "set launcher.gpus_per_node=0" in done.stderr


@pytest.mark.slow
def test_a_sweep_runs_and_a_cancelled_job_is_submitted_once_more(tmp_path, cancel_leftovers):
    """4 jobs; one is cancelled with scancel while it runs: the sweep reports it cancelled, and the
    rerun submits that job once more (only that one) and finishes the sweep."""
    sweep_dir = tmp_path / "sweep"
    command = [*JOB, "train.max_steps=2", "seed=0,1,2,3", *CPU_PARTITION, "launcher.cpus_per_task=1",
               f"sweep_dir={sweep_dir}"]
    first = _start(command)
    try:
        _wait(lambda: len(_jobs(sweep_dir)) == 4 and all(j["job_id"] for j in _jobs(sweep_dir).values()),
              "the ids to be recorded", 120, first)
        jobs = _jobs(sweep_dir)
        cancel_leftovers.extend(j["job_id"] for j in jobs.values())
        victim = sorted(jobs)[-1]  # the last one: still queued or just started
        subprocess.run(["scancel", jobs[victim]["job_id"]], check=True)
        out, _ = first.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    text = out.decode()
    assert first.returncode == 1, text
    after = _jobs(sweep_dir)
    assert after[victim]["state"] == "failed" and "cancelled" in after[victim]["error"], after[victim]
    assert {after[n]["state"] for n in after if n != victim} == {"done"}
    before = _submissions(sweep_dir)
    assert len(before) == 4

    again = run_cli("sweep", *command, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 job(s) already finished: skipped." in again.stdout
    assert "launcher=slurm: 1 job(s) submitted" in again.stdout
    final = _jobs(sweep_dir)
    assert {j["state"] for j in final.values()} == {"done"}
    assert _submissions(sweep_dir) - before == {final[victim]["job_id"]}  # one more submission, of that job
    assert sorted(p.name for p in (sweep_dir / "runs").iterdir()) == sorted(final)  # one run folder per job
    assert len((sweep_dir / "comparison.csv").read_text().splitlines()) == 2


def _kill_with_jobs_queued(tmp_path: Path, cancel_leftovers: list[str]) -> None:
    """Jobs taking both CPUs each, so one runs and the others queue; the sweep is SIGKILLed once
    their ids are recorded; the rerun finds them queued or running and submits none again."""
    sweep_dir = tmp_path / "sweep"
    command = [*JOB, "train.max_steps=2", "seed=0,1,2", *CPU_PARTITION, "launcher.cpus_per_task=2",
               f"sweep_dir={sweep_dir}"]
    first = _start(command)
    try:
        _wait(lambda: len(_jobs(sweep_dir)) == 3 and all(j["job_id"] for j in _jobs(sweep_dir).values()),
              "the ids to be recorded", 120, first)
        ids = {name: job["job_id"] for name, job in _jobs(sweep_dir).items()}
        cancel_leftovers.extend(ids.values())
        assert any(_slurm_state(i) == "PENDING" for i in ids.values())  # some are still queued
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep only: its jobs live in SLURM
        first.wait()
    again = run_cli("sweep", *command, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not submitted again" in again.stdout and "submitted as one array" not in again.stdout, again.stdout
    final = _jobs(sweep_dir)
    assert {j["state"] for j in final.values()} == {"done"}
    assert {name: j["job_id"] for name, j in final.items()} == ids  # the same SLURM jobs, none twice
    assert _submissions(sweep_dir) == set(ids.values())
    assert all(j["attempts"] == 1 for j in final.values())
    return again.stdout


@pytest.mark.slow
def test_a_killed_sweep_submits_no_queued_job_again(tmp_path, cancel_leftovers):
    out = _kill_with_jobs_queued(tmp_path, cancel_leftovers)
    assert "accounting" not in out


@pytest.fixture
def accounting_off():
    if os.geteuid() != 0:
        pytest.skip("restarting slurmctld without accounting needs root (bash .ci/slurm.sh accounting off)")
    subprocess.run(["bash", str(ROOT / ".ci" / "slurm.sh"), "accounting", "off"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["bash", str(ROOT / ".ci" / "slurm.sh"), "accounting", "on"], check=True, capture_output=True)


@pytest.mark.slow
def test_without_accounting_a_killed_sweep_submits_no_queued_job_again(tmp_path, cancel_leftovers, accounting_off):
    probe = subprocess.run(["sacct", "-n"], capture_output=True, text=True)
    assert "accounting storage is disabled" in (probe.stdout + probe.stderr).lower()
    out = _kill_with_jobs_queued(tmp_path, cancel_leftovers)
    assert out.count("SLURM accounting is not available") == 1, out  # warned once
    assert "Bypassing sacct error" not in out


@pytest.mark.slow
def test_usr2_requeues_the_job_and_its_run_resumes(tmp_path, cancel_leftovers):
    """`scancel --signal=USR2` (what SLURM sends before preemption or the time limit): submitit
    calls the job's checkpoint, which stops the run and requeues it; the run resumes."""
    sweep_dir = tmp_path / "sweep"
    command = [*JOB, "train.max_steps=200", *CPU_PARTITION, "launcher.cpus_per_task=1", f"sweep_dir={sweep_dir}"]
    first = _start(command)
    try:
        run_dir = sweep_dir / "runs" / "000"
        _wait(lambda: (run_dir / "config.yaml").is_file(), "the run to start", 180, first)
        (job,) = _jobs(sweep_dir).values()
        cancel_leftovers.append(job["job_id"])
        time.sleep(3)
        subprocess.run(["scancel", "--signal=USR2", job["job_id"]], check=True)
        out, _ = first.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    text = out.decode()
    assert first.returncode == 0, text
    (job,) = _jobs(sweep_dir).values()
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert job["command"] == ["run", f"resume={run_dir}"]  # continued, not restarted
    log = (sweep_dir / "logs" / "000.log").read_text()
    assert log.count("=== attempt") == 2
    assert [json.loads(line)["task"] for line in (run_dir / "results.jsonl").read_text().splitlines()] == ["digits"]
    assert [p.name for p in (sweep_dir / "runs").iterdir()] == ["000"]
