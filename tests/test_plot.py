"""`nevisbench plot`, the Pareto front, and the analysis notebook, on real tiny demo runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from conftest import TINY, run_cli
from nbclient import NotebookClient

from nevisbench.config import compose
from nevisbench.analysis.plot import pareto_front, run_label
from nevisbench.run.runner import run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compute_performance.ipynb"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    common = [*TINY, "train.max_steps=4", "budget.milestones=3", f"out_dir={root}", "stream.tasks=[textures,shapes]"]
    return [run(compose([*common, "run_name=a"])), run(compose([*common, "run_name=b", "scenario=continual"]))]


def test_plot_writes_a_png_with_every_run_and_sub_stream_panel(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = run_cli("plot", *map(str, two_runs), "--out", str(out), "--x", "seconds")
    assert proc.returncode == 0, proc.stderr
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    assert width > 2.5 * height  # three panels side by side: stream, objects, ood
    assert image.std() > 0.05  # not a blank canvas


def test_plot_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    proc = run_cli("plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "is not a finished run: it has no summary.json" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(1, 0.9), (2, 0.95), (3, 0.5), (3, 0.4), (5, 0.45), (8, 0.1)]
    assert pareto_front(points) == [(1, 0.9), (3, 0.4), (8, 0.1)]


def test_run_label_names_learner_and_key_settings(two_runs):
    summary = json.loads((two_runs[1] / "summary.json").read_text())
    assert run_label(summary) == "finetune (continual)"
    assert run_label({"learner": "conv_prune", "learner_config": {"name": "conv_prune", "sparsity": 0.5},
                      "budget": {"flops_per_task": 3e12}}) == "conv_prune (sparsity=0.5, budget=3e+12)"


def test_the_analysis_notebook_executes_on_demo_runs(two_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("NEVISBENCH_RUNS", str(two_runs[0].parent / "*"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "2 finished runs" in text and "finetune (continual)" in text and "objects" in text
    assert any("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))
    assert (tmp_path / "compute_performance.png").is_file()
    assert os.environ["NEVISBENCH_RUNS"].endswith("*")


@pytest.fixture(scope="module")
def budget_runs(tmp_path_factory) -> list[Path]:
    """Two learners x two FLOP budgets (one task), and one continual run: real tiny demo runs."""
    root = tmp_path_factory.mktemp("budgets")
    common = [*TINY, "budget.milestones=2", f"out_dir={root}", "stream.tasks=[faces]"]
    runs = [run(compose([*common, f"learner={learner}", f"budget.flops_per_task={budget}", f"run_name={learner}-{budget}"]))
            for learner in ("finetune", "conv_prune") for budget in ("2e9", "6e9")]
    return runs + [run(compose([*common, "budget.flops_per_task=2e9", "scenario=continual", "run_name=continual"]))]


def test_budget_runs_are_the_points_of_each_learners_curve(budget_runs, tmp_path):
    from nevisbench.analysis.plot import learner_curves, load_runs

    summaries = load_runs(budget_runs)
    for summary in summaries:
        (task,) = summary["tasks"]
        point = summary["point"]
        # one point per run: x = its counted training (+ search) compute, y = its final mean error
        assert point["flops"] == pytest.approx(task["flops"]["train"] + task["flops"]["search"])
        assert point["error"] == summary["final_mean_error"] == task["test_error"]
        assert 0.5 < task["budget"]["ratio"] <= 1.0  # the whole schedule spans the steps the budget buys
    continual = summaries[-1]
    assert "auc" not in continual and "anytime_curve" not in continual  # no averaged anytime AUC
    curves, anytime = learner_curves(summaries[:-1], None)
    assert set(curves) == {"finetune", "conv_prune (sparsity=0.5)"}
    for label, points in curves.items():
        assert len(points) == 2 and points[0][0] < points[1][0]  # its two budgets, in compute order
        assert len(anytime[label]) == 2  # each transfer run's anytime curve, drawn dashed
    out = tmp_path / "frontier.png"
    proc = run_cli("plot", *map(str, budget_runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert matplotlib.image.imread(out).std() > 0.05


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"learner": "x"}'])
def test_plot_refuses_a_damaged_summary_in_one_line(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(content)
    proc = run_cli("plot", str(run_dir), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "summary" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_plot_refuses_an_unknown_figure_format(two_runs, tmp_path):
    proc = run_cli("plot", str(two_runs[0]), "--out", str(tmp_path / "x.xyz"))
    assert proc.returncode == 2 and "unknown format '.xyz'. Valid: .png, .pdf, .svg" in proc.stderr
    assert not (tmp_path / "x.xyz").exists()
