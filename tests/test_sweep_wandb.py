"""A sweep with `logger=wandb` (offline, nothing reaches the network; see conftest): its runs share a
W&B group named after the sweep, and the comparison is logged as a `wandb.Table`, one row per
configuration x budget. Everything is read back from the offline run files W&B wrote."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from wandb_records import read_run, records

from nevisbench.analysis import COLUMNS

# 2 configurations x 2 budgets (steps per task), one seed: four tiny runs, two at a time.
WANDB_SWEEP = ["learner=finetune,ft_head", "train.max_steps=1,2", "stream.tasks=[digits]", "data.image_size=16",
               "data.batch_size=16", "trainer=cpu", "trainer.progress_bar=false", "budget.milestones=0",
               "logger=wandb", "launcher=local", "launcher.jobs=2"]


def _run_record(log: Path) -> Any:
    return next(r.run for r in records(log) if r.WhichOneof("record_type") == "run")


def _complete(log: Path, key: str, timeout: float = 30.0) -> dict[str, Any]:
    """W&B's service may finish writing an offline log a moment after the process ended."""
    deadline = time.monotonic() + timeout
    while True:
        logged = read_run(log)
        if any(key in row for row in logged["history"]) or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


@pytest.mark.slow
def test_sweep_runs_share_a_wandb_group_and_the_comparison_is_a_wandb_table(tmp_path):
    sweep_dir = tmp_path / "study-7"
    result = run_cli("sweep", *WANDB_SWEEP, f"sweep_dir={sweep_dir}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W&B: comparison table logged to group 'study-7' (offline)" in result.stdout

    # every run of the sweep: its own offline W&B run, in the group named after the sweep
    jobs = [json.loads(line) for line in (sweep_dir / "jobs.jsonl").read_text().splitlines()]
    assert len(jobs) == 4
    for job in jobs:
        (log,) = (sweep_dir / "runs" / job["name"]).glob("wandb/offline-run-*/run-*.wandb")
        run = _run_record(log)
        assert run.run_group == "study-7" and run.display_name == job["name"], (run.run_group, run.display_name)
        assert run.job_type != "comparison"

    # the comparison: one more run in that group, holding the table
    (log,) = sweep_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = _run_record(log)
    assert (run.run_group, run.job_type, run.display_name) == ("study-7", "comparison", "study-7-comparison")
    logged = _complete(log, "comparison/_type")
    (row,) = [row for row in logged["history"] if "comparison/_type" in row]  # nested keys come back flat
    table_ref = {k.partition("/")[2]: v for k, v in row.items() if k.startswith("comparison/")}
    assert table_ref["_type"] == "table-file" and (table_ref["nrows"], table_ref["ncols"]) == (4, len(COLUMNS))
    assert row["comparison_figure/_type"] == "image-file"
    table = json.loads((log.parent / "files" / table_ref["path"]).read_text())
    assert table["columns"] == list(COLUMNS)

    # its rows are the sweep's comparison.csv: one per configuration x budget, same numbers
    local = list(csv.DictReader(io.StringIO((sweep_dir / "comparison.csv").read_text())))
    assert [(r[0], r[3]) for r in table["data"]] == [
        ("finetune", "1 steps/task"), ("finetune", "2 steps/task"), ("ft_head", "1 steps/task"),
        ("ft_head", "2 steps/task")]
    for logged_row, csv_row in zip(table["data"], local, strict=True):
        cells = dict(zip(COLUMNS, logged_row, strict=False))
        assert cells["configuration"] == csv_row["configuration"] and cells["budget"] == csv_row["budget"]
        assert cells["seeds"] == int(csv_row["seeds"]) == 1 and cells["error_std"] is None
        assert cells["error_mean"] == float(csv_row["error_mean"]) and cells["flops_mean"] == float(csv_row["flops_mean"])
        assert (cells["scenario"], cells["stream"], cells["measure"]) == ("transfer", "demo", "algorithmic")
    assert len({r[7] for r in table["data"]}) == 4  # the budgets and learners really differ in compute
