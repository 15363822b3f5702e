"""`nevisbench compare`: mean and std over seeds per configuration and budget, CSV, Markdown, figure."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from nevisbench.analysis import collect, compare_rows

ERRORS = {  # (learner, sparsity, budget) -> error per seed
    ("finetune", None, 1e11): [0.40, 0.44],
    ("finetune", None, 1e12): [0.30, 0.32],
    ("conv_prune", 0.75, 1e11): [0.50, 0.56],
    ("conv_prune", 0.75, 1e12): [0.35, 0.39],
}


def _run(root: Path, name: str, learner: str, sparsity: float | None, budget: float, seed: int, error: float,
         point: bool = False) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    learner_config = {"name": learner} if sparsity is None else {"name": learner, "sparsity": sparsity, "scope": "local",
                                                                  "signal": "magnitude", "prune_stem": True}
    train = budget * 2 * (0.25 if sparsity else 1.0)
    tasks = [{"task": t, "index": i, "status": "ok", "domain": d, "test_error": error,
              "flops": {"train": train / 2, "search": 0.0, "executed": {"train": train, "search": 0.0}}}
             for i, (t, d) in enumerate((("shapes", "object"), ("digits", "ocr")))]
    summary = {"learner": learner, "learner_config": learner_config, "scenario": "transfer", "stream": "demo",
               "seed": seed, "budget": {"flops_per_task": budget, "measure": "algorithmic"},
               "flops": {"train": train, "search": 0.0, "executed": {"train": train, "search": 0.0}},
               "final_mean_error": error, "tasks": tasks,
               "sub_streams": {"objects": {"final_mean_error": error}, "ood": {"final_mean_error": error}}}
    if point:
        summary["point"] = {"flops": train, "error": error, "measure": "algorithmic"}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "scenario": "transfer", "run_name": name,
                                                        "train": {"max_steps": 1000}, "learner": learner_config}))


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "jobs.jsonl").write_text("")
    for (learner, sparsity, budget), errors in ERRORS.items():
        for seed, error in enumerate(errors):
            _run(sweep / "runs", f"{learner}-{budget:g}-{seed}", learner, sparsity, budget, seed, error, point=seed == 1)
    return sweep


def test_rows_are_mean_and_std_over_seeds_per_configuration_and_budget(tmp_path):
    rows = compare_rows(collect([_sweep(tmp_path)]))
    assert [(r.configuration, r.budget, r.seeds) for r in rows] == [
        ("conv_prune (sparsity=0.75)", "1e+11 FLOPs/task", 2), ("conv_prune (sparsity=0.75)", "1e+12 FLOPs/task", 2),
        ("finetune", "1e+11 FLOPs/task", 2), ("finetune", "1e+12 FLOPs/task", 2)]
    for row, key in zip(rows, [("conv_prune", 0.75, 1e11), ("conv_prune", 0.75, 1e12), ("finetune", None, 1e11),
                               ("finetune", None, 1e12)], strict=False):
        assert abs(row.error_mean - statistics.fmean(ERRORS[key])) < 1e-12
        assert abs(row.error_std - statistics.stdev(ERRORS[key])) < 1e-12
        assert row.flops_mean == key[2] * 2 * (0.25 if key[1] else 1.0)


def test_a_baseline_gives_each_row_its_compute_as_a_multiple_of_the_baselines_at_its_budget(tmp_path):
    from nevisbench.analysis.compare import relate_to, to_csv, to_markdown
    from nevisbench.errors import ConfigError

    rows = compare_rows(collect([_sweep(tmp_path)]))
    relate_to(rows, "finetune")  # a learner name with one configuration per budget
    assert [(r.configuration, r.budget, r.vs_baseline) for r in rows] == [
        ("conv_prune (sparsity=0.75)", "1e+11 FLOPs/task", 0.25), ("conv_prune (sparsity=0.75)", "1e+12 FLOPs/task", 0.25),
        ("finetune", "1e+11 FLOPs/task", 1.0), ("finetune", "1e+12 FLOPs/task", 1.0)]
    assert "| x finetune's compute |" in to_markdown(rows).splitlines()[0] and "| 0.25 |" in to_markdown(rows)
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [float(r["flops_vs_baseline"]) for r in table] == [0.25, 0.25, 1.0, 1.0] and table[0]["baseline"] == "finetune"
    relate_to(rows, "conv_prune (sparsity=0.75)")  # or a configuration, as the table names it
    assert [r.vs_baseline for r in rows] == [1.0, 1.0, 4.0, 4.0]
    with pytest.raises(ConfigError, match=r"Unknown --baseline 'er'.*Valid: conv_prune, conv_prune \(sparsity=0.75\), finetune"):
        relate_to(rows, "er")
    assert "x " not in to_markdown(compare_rows(collect([_sweep(tmp_path / "plain")])))  # no baseline, no column
    for row in rows:  # the configuration matched is the row's study's (a baseline on another backbone is not this row's)
        row.points[0].config["backbone.name"] = "vit_tiny" if row.configuration == "finetune" else "resnet18"
    relate_to(rows, "finetune")  # another backbone: not comparable, no ratio
    assert [r.vs_baseline for r in rows] == [None, None, 1.0, 1.0] and "| - |" in to_markdown(rows)


@pytest.mark.slow  # a subprocess
def test_compare_command_prints_and_writes_csv_markdown_and_figure(tmp_path):
    sweep = _sweep(tmp_path)
    out = tmp_path / "out"
    result = run_cli("compare", str(sweep), "--csv", str(out / "t.csv"), "--markdown", str(out / "t.md"),
                     "--out", str(out / "fig.png"))
    assert result.returncode == 0, result.stderr
    assert "conv_prune (sparsity=0.75)" in result.stdout and "0.0424" in result.stdout  # std of 0.50, 0.56
    table = list(csv.DictReader(io.StringIO((out / "t.csv").read_text())))
    assert len(table) == 4 and float(table[0]["error_mean"]) == statistics.fmean([0.50, 0.56])
    assert float(table[2]["error_std"]) == statistics.stdev([0.40, 0.44]) and table[2]["seeds"] == "2"
    assert (out / "t.md").read_text().count("\n") == 6
    assert (out / "fig.png").stat().st_size > 20_000


@pytest.mark.slow  # a subprocess
def test_compare_refuses_what_is_not_a_run(tmp_path):
    result = run_cli("compare", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: '{tmp_path}' holds no finished run: no summary.json in it, in its "
                                     "sub-folders or in its runs/ folder (pass run folders, sweep folders or folders "
                                     "of runs)")
    result = run_cli("compare", str(_sweep(tmp_path)), "--out", str(tmp_path / "fig.jpeg"))
    assert result.returncode == 2 and "must end in one of .png, .pdf, .svg" in result.stderr


@pytest.mark.slow  # a subprocess
def test_a_searched_configuration_shows_its_compute_with_and_without_search(tmp_path):
    from nevisbench.run.store.scores import run_point

    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "jobs.jsonl").write_text("")
    for seed, error in enumerate((0.30, 0.34)):
        _run(sweep / "runs", f"searched-{seed}", "finetune", None, 1e11, seed, error)
        path = sweep / "runs" / f"searched-{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        for task in summary["tasks"]:  # three losing trials, each the winner's training again
            task["flops"]["search"] = 3 * task["flops"]["train"]
            task["flops"]["executed"]["search"] = 3 * task["flops"]["executed"]["train"]
        summary["flops"]["search"] = 3 * summary["flops"]["train"]
        summary["point"] = run_point(summary["tasks"], error)
        summary["point_without_search"] = run_point(summary["tasks"], error, x="train")
        path.write_text(json.dumps(summary))
    (row,) = compare_rows(collect([sweep]))
    assert row.flops_mean == 8e11 and row.flops_without_search_mean == 2e11  # train 2e11, search 6e11
    out = tmp_path / "cmp"
    done = run_cli("compare", str(sweep), "--csv", str(out / "t.csv"), "--out", str(out / "f.png"))
    assert done.returncode == 0, done.stderr
    (line,) = csv.DictReader(io.StringIO((out / "t.csv").read_text()))
    assert float(line["flops_mean"]) == 8e11 and float(line["flops_without_search_mean"]) == 2e11
    assert "compute without search" in done.stdout and (out / "f.png").stat().st_size > 10_000
