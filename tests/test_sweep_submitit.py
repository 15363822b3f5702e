"""The slurm launcher through submitit's own local executor (real submitit code, no SLURM):
an array submission, a preemption signal, the checkpoint that requeues the job with `resume=`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from submitit.helpers import DelayedSubmission

from nevisbench.sweep.grid import parse_sweep
from nevisbench.sweep.jobs import Job, SweepFolder
from nevisbench.sweep.launchers import SweepJob, load_launcher, submit_slurm

TINY = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16", "train.max_steps=2",
        "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0"]


def _folder(tmp_path: Path, overrides: list[str]) -> SweepFolder:
    grid = parse_sweep(overrides)
    jobs = [Job(index=i, name=f"{i:03d}-job", overrides=list(o)) for i, o in enumerate(grid.jobs)]
    return SweepFolder.create(tmp_path / "sweep", {"command": "test"}, jobs)


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


def test_submitit_requeue_after_preemption_resumes_the_run(tmp_path):
    folder = _folder(tmp_path, TINY)
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
    assert "Calling checkpoint method" in out and "requeued: job 000-job continues" in out
    (job,) = [json.loads(line) for line in (folder.path / "jobs.jsonl").read_text().splitlines()]
    assert job["state"] == "done" and job["attempts"] == 2 and job["job_id"] == str(handle.job_id)
    assert job["command"] == ["run", f"resume={run_dir}"]
    log = folder.log_path(folder.jobs[0]).read_text()
    assert "=== attempt 1: nevisbench run learner=finetune" in log and "=== attempt 2: nevisbench run resume=" in log
    results = (run_dir / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["task"] for line in results] == ["digits"]  # one task, run to its end once
    assert (run_dir / "summary.json").is_file()
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no second run folder
