"""A sweep folder as untrusted input and as a shared resource: jobs.jsonl checked field by field
and against sweep.yaml's grid, one sweep process per folder, a job's run only in its own folder,
grids refused by size before they are expanded, job texts printed as text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from rich.console import Console

from nevisbench.errors import ConfigError
from nevisbench.sweep.grid import job_name, parse_sweep
from nevisbench.sweep.jobs import Job, SweepFolder, job_command, last_output

TINY = ["learner=finetune", "stream.tasks=[digits]", "data.image_size=16", "data.batch_size=16", "train.max_steps=2",
        "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0"]


def _sweep(tmp_path: Path, overrides: list[str] = (*TINY, "seed=0,1,2")) -> SweepFolder:
    """A sweep folder as `nevisbench sweep` records it, its lock let go."""
    from nevisbench.sweep.sweeper import _grid_values

    grid = parse_sweep(list(overrides))
    jobs = [Job(index=i, name=job_name(i, o, grid.swept), overrides=[*o, "logger.group=s"]) for i, o in enumerate(grid.jobs)]
    info = {"command": "test", "grid": _grid_values(grid), "swept": list(grid.swept), "group": "s", "launcher": {"name": "local"}}
    folder = SweepFolder.create(tmp_path / "sweep", info, jobs)
    folder._held.close()  # as if the sweep that made it had ended
    return folder


def _lines(folder: SweepFolder) -> list[dict]:
    return [json.loads(line) for line in (folder.path / "jobs.jsonl").read_text().splitlines()]


def _write(folder: SweepFolder, lines: list) -> None:
    (folder.path / "jobs.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


@pytest.mark.parametrize("field, value, message", [
    ("state", "bogus", "'state' must be one of pending, running, done, failed, not 'bogus'"),
    ("attempts", "x", "'attempts' must be a whole number >= 0, not 'x'"),
    ("attempts", True, "'attempts' must be a whole number >= 0, not true"),
    ("devices", "two", "'devices' must be a whole number >= 1, not 'two'"),
    ("name", 5, "'name' must be a string, not 5"),
    ("name", "../../../x", "job 1 is recorded as '../../../x' with other overrides"),
    ("job_id", "../../x", "'job_id' must be null or an engine job id"),
    ("overrides", "seed=1", "'overrides' must be a list of strings"),
    ("index", 7, "not in sweep.yaml's grid: job 7 (the grid has 3 jobs)"),
    ("index", 0, "a second record of job 0"),
    ("surprise", 1, "unknown field 'surprise'"),
])
def test_every_field_of_jobs_jsonl_is_checked(tmp_path, field, value, message):
    folder = _sweep(tmp_path)
    lines = _lines(folder)
    lines[1][field] = value
    _write(folder, lines)
    with pytest.raises(ConfigError) as caught:
        SweepFolder.open(folder.path)
    text = str(caught.value)
    assert text.startswith(f"{folder.path / 'jobs.jsonl'}: line 2: ") and message in text, text
    assert "\n" not in text


@pytest.mark.slow
@pytest.mark.parametrize("line, message", [
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "line 2: nested too deeply"),
    (b"{not json", "line 2: not JSON"),
    (b"[1, 2]", "line 2: a job record is a JSON object, not list"),
])
def test_a_damaged_jobs_jsonl_is_one_line_naming_file_and_line(tmp_path, line, message):
    folder = _sweep(tmp_path)
    text = (folder.path / "jobs.jsonl").read_bytes().splitlines()
    (folder.path / "jobs.jsonl").write_bytes(b"\n".join([text[0], line, text[2]]) + b"\n")
    done = run_cli("sweep", "status", str(folder.path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert str(folder.path / "jobs.jsonl") in done.stderr


@pytest.mark.slow
def test_a_tampered_name_never_writes_outside_the_sweep_folder(tmp_path):
    folder = _sweep(tmp_path)
    lines = _lines(folder)
    lines[0]["name"] = "../../../escaped"
    _write(folder, lines)
    def files() -> list[str]:  # lock files aside
        return sorted(str(p) for p in tmp_path.rglob("*") if not p.name.endswith(".lock"))

    before = files()
    done = run_cli("sweep", f"resume={folder.path}", cwd=tmp_path)
    assert done.returncode == 2 and "job 0 is recorded as '../../../escaped'" in done.stderr, done.stderr
    assert files() == before


def test_missing_job_records_are_recreated_from_the_grid(tmp_path):
    folder = _sweep(tmp_path)
    lines = _lines(folder)
    _write(folder, [lines[0], lines[2]])  # a deleted line
    again = SweepFolder.open(folder.path)
    assert again.recreated == [1] and [j.index for j in again.jobs] == [0, 1, 2]
    assert again.jobs[1].name == lines[1]["name"] and again.jobs[1].overrides == lines[1]["overrides"]
    (folder.path / "jobs.jsonl").write_text("")  # an emptied file: every job comes back, none dropped
    assert [j.name for j in SweepFolder.open(folder.path).jobs] == [line["name"] for line in lines]


@pytest.mark.slow
def test_sweep_status_creates_nothing_in_what_it_reads(tmp_path):
    folder = _sweep(tmp_path)
    lines = _lines(folder)
    _write(folder, lines[:2])
    (folder.path / "logs").rmdir()
    (folder.path / "runs" / lines[0]["name"]).mkdir()  # a run folder without a lock file
    lines[0]["state"] = "running"
    _write(folder, lines[:2])

    def tree() -> dict[str, float]:
        return {str(p): p.stat().st_mtime_ns for p in folder.path.rglob("*")}

    before = tree()
    done = run_cli("sweep", "status", str(folder.path))
    assert done.returncode == 0, done.stderr
    assert "lacks 1 job(s) of the grid" in done.stdout and lines[0]["name"] in done.stdout
    assert tree() == before


@pytest.mark.slow
def test_a_second_sweep_process_on_a_held_folder_stops_naming_the_holder(tmp_path):
    folder = _sweep(tmp_path)
    held = SweepFolder.hold(folder.path)  # this test process runs the sweep now
    try:
        done = run_cli("sweep", f"resume={folder.path}")
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"sweep folder {folder.path} is in use by pid {os.getpid()} on " in lines[0], lines
        assert not (folder.path / "logs").exists() or not any((folder.path / "logs").iterdir())
        assert {j["attempts"] for j in _lines(folder)} == {0}  # nothing ran
    finally:
        held.close()


def test_a_run_killed_while_writing_its_config_restarts_in_the_same_folder(tmp_path):
    folder = _sweep(tmp_path)
    job = folder.jobs[0]
    run_dir = folder.run_dir(job)
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text("pid 1 on elsewhere\n")  # what a kill inside RunFolder.create leaves
    (run_dir / ".config.yaml.k3j2.tmp").write_text("seed: 0\nlearn")
    command = job_command(folder, job)
    assert not any(c.startswith("resume=") for c in command) and f"run_name='{job.name}'" in command
    assert not run_dir.exists()  # cleared: the fresh run makes exactly this folder again


@pytest.mark.slow
def test_a_sweep_job_never_gets_a_suffixed_run_folder(tmp_path):
    """A sweep job's run goes to runs/<job name> or nowhere: a taken folder is refused, not renamed."""
    taken = tmp_path / "runs" / "000-seed=0"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("someone else's")
    done = run_cli("run", *TINY, "run_name='000-seed=0'", f"out_dir={tmp_path / 'runs'}",
                   env_extra={"NEVISBENCH_EXACT_RUN_DIR": "1"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"run folder {taken} already exists; a sweep job runs in its own folder only" in done.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["000-seed=0"]


@pytest.mark.parametrize("overrides, size", [
    (["budget.flops_per_task=logspace(1e11,1e12,99999999999)"], "99,999,999,999 jobs"),
    (["seed=range(0,1000000)"], "1,000,000 jobs"),
    (["seed=range(0,200)", "train.lr=range(0,200)"], "40,000 jobs (seed: 200 x train.lr: 200)"),
    (["seed=range(0,20)", "sweep.max_jobs=10"], "20 jobs (seed: 20), more than sweep.max_jobs=10"),
])
def test_a_grid_larger_than_max_jobs_is_refused_before_it_is_expanded(overrides, size):
    started = time.monotonic()
    with pytest.raises(ConfigError, match="more than sweep.max_jobs") as caught:
        parse_sweep(overrides)
    assert size in str(caught.value) and "sweep.max_jobs=N" in str(caught.value)
    assert time.monotonic() - started < 5  # sized from its axes, not listed


@pytest.mark.slow
def test_a_huge_grid_on_the_command_line_is_one_line(tmp_path):
    done = run_cli("sweep", "seed=range(0,1000000)", f"sweep_dir={tmp_path / 's'}", timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "The grid has 1,000,000 jobs (seed: 1,000,000), more than sweep.max_jobs=10,000" in done.stderr
    assert not (tmp_path / "s").exists()
    assert len(parse_sweep(["seed=range(0,20)", "sweep.max_jobs=20"]).jobs) == 20  # the limit can be raised


@pytest.mark.slow
def test_the_batch_composer_gives_what_compose_gives():
    """`ConfigBatch` (one Hydra composition per choice of group options, each job's overrides
    applied by Hydra to a copy) gives `compose`'s config, or its exact error, for each job."""
    from omegaconf import OmegaConf

    from nevisbench.config import compose
    from nevisbench.config.batch import ConfigBatch
    from nevisbench.errors import NevisbenchError

    def outcome(make, overrides):
        try:
            return OmegaConf.to_container(make(overrides), resolve=True)
        except NevisbenchError as exc:
            return f"{type(exc).__name__}: {exc}"

    batch = ConfigBatch()
    cases = [["learner=conv_prune", "learner.sparsity=0.5", "seed=3", "run_name=x", "out_dir=/tmp/r"],
             ["learner=conv_prune", "learner.sparsity=0.25", "seed=4", "stream.tasks=[digits,faces]"],
             ["learner=finetune", "learner.sparsity=0.5"], ["learner=conv_prune", "learner.sparsity=1.5"],
             ["train.lr=abc"], ["trainer=cpu", "trainer.devices=2"], ["train.lr=${oc.env:HOME}"], ["+foo=1"],
             ["learner=conv_prune", "learner=finetune"], ["search.space.lr=loguniform(1e-4,1e-1)"],
             ["budget.flops_per_task=1e12", "seed=1", "seed=2"], ["learner=nope"]]
    results = [outcome(batch.compose, case) for case in cases]
    assert isinstance(results[0], dict) and results[0]["learner"]["sparsity"] == 0.5 and results[0]["seed"] == 3
    assert results[2].startswith("ConfigError: Unknown config key 'learner.sparsity'")
    for case, result in zip(cases, results, strict=False):
        assert result == outcome(compose, case), case


def test_job_texts_are_printed_as_text_not_markup(tmp_path):
    from nevisbench.sweep.progress import jobs_table, watch

    folder = _sweep(tmp_path)
    folder.update(folder.jobs[0], state="failed", attempts=1, error="ValueError: task [digits] has [3] classes")
    console = Console(record=True, width=300, force_terminal=False)
    watch(folder, lambda: True, console)
    console.print(jobs_table(folder))
    text = console.export_text()
    assert text.count("task [digits] has [3] classes") == 2, text


def test_a_failed_run_reports_its_error_or_its_signal_never_the_attempt_header(tmp_path):
    from nevisbench.sweep.jobs import _failure

    folder = _sweep(tmp_path)
    job = folder.jobs[0]
    log = folder.log_path(job)
    log.write_text("\n=== attempt 1: nevisbench run learner=finetune seed=0\n")
    assert last_output(folder, job) == ""
    assert _failure(log, -15).startswith("the run was killed by SIGTERM")
    assert _failure(log, 3) == "exit status 3"
    log.write_text(log.read_text() + "error: out of memory\n=== attempt 2: nevisbench run resume=x\n")
    assert _failure(log, 1) == "error: out of memory"


SACCT_DISABLED = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
echo "Slurm accounting storage is disabled" >&2
exit 1
"""
SQUEUE = """#!/bin/sh
printf '4242_0|RUNNING\\n4242_1|PENDING\\n'
"""


def test_without_accounting_the_states_come_from_squeue_with_one_warning(tmp_path, monkeypatch):
    import logging

    from nevisbench.sweep.launchers import load_launcher
    from nevisbench.sweep.slurm_states import engine_states, engine_warning

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, text in (("sacct", SACCT_DISABLED), ("squeue", SQUEUE)):
        (bin_dir / tool).write_text(text)
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = _sweep(tmp_path)
    folder.update_many({0: {"job_id": "4242_0"}, 1: {"job_id": "4242_1"}, 2: {"job_id": "4242_2"}})
    found = engine_states(folder, folder.jobs, load_launcher({"launcher": "slurm"}))
    assert {i: e.state for i, e in found.items()} == {0: "RUNNING", 1: "PENDING", 2: "UNKNOWN"}
    assert [i for i, e in found.items() if e.in_flight] == [0, 1]  # never submitted again
    assert found[0].queue.accounting is False
    assert (bin_dir / "calls").read_text().count("\n") == 1  # sacct asked once, then squeue only
    warning = engine_warning(load_launcher({"launcher": "slurm"}), found)
    assert "SLURM accounting is not available (sacct: Slurm accounting storage is disabled)" in warning
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("submitit")
    logger.addHandler(handler)
    try:
        for call in range(3):  # submitit's watcher warns on every failed call
            logger.warning(f"Call #{call} - Bypassing sacct error ..., status may be inaccurate.")
    finally:
        logger.removeHandler(handler)
    assert len(records) <= 1


def test_an_sbatch_refusal_is_one_line_with_the_fix():
    from submitit.core.utils import FailedJobError

    from nevisbench.sweep.launchers import load_launcher
    from nevisbench.sweep.slurm import _sbatch_error

    cfg = load_launcher({"launcher": "slurm"})
    error = _sbatch_error(FailedJobError("sbatch: error: Invalid generic resource (gres) specification"), cfg)
    assert str(error) == ("sbatch refused the jobs: Invalid generic resource (gres) specification; the partition has "
                          "no GPUs: set launcher.gpus_per_node=0 (and trainer=cpu) for a CPU partition. Nothing was submitted")
    error = _sbatch_error(FailedJobError("sbatch: error: Batch job submission failed: Requested node configuration "
                                         "is not available"), cfg)
    assert "launcher.cpus_per_task=8 CPUs" in str(error) and "sinfo" in str(error)


@pytest.mark.slow
def test_two_sweep_processes_on_one_folder_run_every_job_once(tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "nevisbench", "sweep", *TINY, "seed=0,1", "launcher=local", "launcher.jobs=1",
               f"sweep_dir={sweep_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    while not (sweep_dir / "jobs.jsonl").is_file():
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"sweep folder {sweep_dir} is in use by pid {first.pid} on " in second.stderr
    assert second.stderr.count("\n") == 1
    assert sorted(p.name for p in (sweep_dir / "runs").iterdir()) == ["000-seed=0", "001-seed=1"]
    assert [j["attempts"] for j in map(json.loads, (sweep_dir / "jobs.jsonl").read_text().splitlines())] == [1, 1]
    assert (sweep_dir / "comparison.csv").read_text().splitlines()[1].split(",")[4] == "2"  # 2 seeds, not 4
