"""The figures of `nevisbench plot` / `compare --out` (one drawing path), the labeller they share
with `compare`, the table on a pipe, and the analysis notebook on real tiny demo runs."""

from __future__ import annotations

import argparse
import io
import statistics
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from conftest import TINY, run_cli
from matplotlib.collections import PolyCollection
from nbclient import NotebookClient
from rich.console import Console
from test_analysis_reader import good_config, good_summary, write_run

from nevisbench.analysis import collect, compare_rows, compute_figure, pareto_front, print_table, render_table
from nevisbench.analysis.figures import curves

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compute_performance.ipynb"


def _runs(root: Path, specs: list[dict]) -> Path:
    """Run folders from specs: learner, sparsity, lr, budget, seed, error, tasks (names, all `object`
    domain unless `ood`), each with its own summary.json and config.yaml."""
    for n, spec in enumerate(specs):
        summary, config = good_summary(error=spec.get("error", 0.3), seed=spec.get("seed", 0)), good_config(spec.get("seed", 0))
        learner = spec.get("learner", "finetune")
        summary["learner"] = learner
        summary["learner_config"] = {"name": learner, **({"sparsity": spec["sparsity"]} if "sparsity" in spec else {})}
        names = spec.get("tasks", ("shapes", "digits"))
        summary["tasks"] = [{**summary["tasks"][0], "task": name, "index": i,
                             "domain": "ocr" if spec.get("ood") and i else "object"} for i, name in enumerate(names)]
        if not spec.get("ood"):
            summary.pop("sub_streams")
        budget = spec.get("budget", 1e9)
        summary["budget"]["flops_per_task"] = budget
        flops = budget * len(names) * (1 - spec.get("sparsity", 0.0))
        summary["point"] = summary["point_without_search"] = {"flops": flops, "error": spec.get("error", 0.3)}
        if "x" in spec:
            summary["point"]["x"] = spec["x"]
        config["train"]["lr"] = spec.get("lr", 0.05)
        write_run(root / f"{n:03d}", summary, config)
    return root


def test_two_seeds_at_one_budget_are_one_mean_point_with_a_band(tmp_path):
    runs = collect([_runs(tmp_path, [{"seed": 0, "error": 0.3}, {"seed": 1, "error": 0.4}])])
    assert curves(runs) == {"finetune": [(2e9, pytest.approx(0.35), pytest.approx(statistics.stdev([0.3, 0.4])), 2)]}
    ax = compute_figure(runs).axes[0]
    (curve,) = [line for line in ax.get_lines() if line.get_label() == "finetune"]
    assert list(curve.get_xdata()) == [2e9] and list(curve.get_ydata()) == [pytest.approx(0.35)]
    for line in ax.get_lines():  # no line joins the seeds at one compute (it would read as a curve)
        xs = list(line.get_xdata())
        assert len(xs) < 2 or line.get_linestyle() == "None" or len(set(xs)) == len(xs), line.get_label()
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    std = statistics.stdev([0.3, 0.4])
    assert min(ys) == pytest.approx(0.35 - std) and max(ys) == pytest.approx(0.35 + std)
    xs = band.get_paths()[0].vertices[:, 0]
    assert min(xs) < 2e9 < max(xs)  # a box around the one budget, visible on the log axis


def test_budgets_of_one_configuration_are_one_curve_in_compute_order(tmp_path):
    specs = [{"budget": b, "seed": s, "error": e + s / 100} for b, e in ((4e9, 0.2), (1e9, 0.4)) for s in (0, 1)]
    runs = collect([_runs(tmp_path, specs)])
    ((low, high),) = [[p[:2] for p in points] for points in curves(runs).values()]
    assert low == (2e9, pytest.approx(0.405)) and high == (8e9, pytest.approx(0.205))


def test_runs_over_different_task_sets_are_never_joined_and_are_warned_of(tmp_path):
    specs = [{"tasks": ("shapes", "digits"), "error": 0.3}, {"tasks": ("shapes",), "error": 0.1}]
    warnings: list[str] = []
    runs = collect([_runs(tmp_path, specs)], warn=warnings.append)
    (warning,) = warnings
    assert "2 different task sets" in warning and "not comparable" in warning
    assert len({r.study for r in runs}) == 2  # each run in a study of its own
    assert [r.seeds for r in compare_rows(runs)] == [1, 1]  # two rows, never averaged as seeds
    fig = compute_figure(runs)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 and len({ax.get_title() for ax in panels}) == 2
    for ax in panels:
        (curve,) = [line for line in ax.get_lines() if line.get_label() == "finetune"]
        assert len(curve.get_xdata()) == 1


def test_runs_of_another_budget_x_are_another_study_and_the_axis_says_which(tmp_path):
    """`budget.x` puts other compute on the x axis: such runs are never joined as seeds or on one
    curve with the papers' axis, and each panel's x label names its compute."""
    specs = [{"seed": 0, "error": 0.3}, {"seed": 1, "error": 0.4, "x": "train+eval"}]
    warnings: list[str] = []
    runs = collect([_runs(tmp_path, specs)], warn=warnings.append)
    assert sorted(r.x_kinds for r in runs) == ["train+eval", "train+search"]
    (warning,) = warnings
    assert "x axes" in warning and "train+eval" in warning
    assert len({r.study for r in runs}) == 2 and [r.seeds for r in compare_rows(runs)] == [1, 1]
    panels = [ax for ax in compute_figure(runs).axes if ax.get_visible()]
    assert sorted(ax.get_xlabel() for ax in panels) == ["compute: FLOPs, algorithmic, training + evaluation",
                                                        "compute: FLOPs, algorithmic, training + search"]


def test_labels_name_what_tells_configurations_apart(tmp_path):
    specs = [{"learner": "conv_prune", "sparsity": 0.5, "lr": 0.1}, {"learner": "conv_prune", "sparsity": 0.75},
             {"learner": "finetune"}]
    runs = collect([_runs(tmp_path, specs)])
    assert [r.label for r in runs] == ["conv_prune (sparsity=0.5, train.lr=0.1)", "conv_prune (sparsity=0.75, train.lr=0.05)",
                                       "finetune (train.lr=0.05)"]


def test_compare_and_plot_share_one_reader_and_one_labeller(tmp_path, monkeypatch):
    import nevisbench.analysis.commands as commands
    import nevisbench.analysis.compare as compare
    import nevisbench.analysis.labels as labels
    import nevisbench.analysis.runs as reader
    import nevisbench.sweep.sweeper as sweeper

    assert commands.collect is compare.collect is labels.collect is sweeper.collect
    assert labels.load_runs is reader.load_runs
    calls: list[str] = []
    for name, function in (("load_runs", labels.load_runs), ("label_runs", labels.label_runs)):
        monkeypatch.setattr(labels, name, lambda *a, _f=function, _n=name, **k: calls.append(_n) or _f(*a, **k))
    folder = _runs(tmp_path / "runs", [{"seed": 0}, {"seed": 1}])
    console = Console(file=io.StringIO())
    commands.compare_command(argparse.Namespace(dirs=[folder], csv=None, markdown=None, out=None, x=None), console)
    commands.plot_command(argparse.Namespace(runs=[folder], out=tmp_path / "f.png", x=None, anytime=False), console)
    assert calls == ["load_runs", "label_runs"] * 2


def test_the_figure_fits_a_paper_column(tmp_path):
    runs = collect([_runs(tmp_path, [{"budget": b, "error": e} for b, e in ((1e9, 0.5), (1.5e9, 0.45), (3e9, 0.4))])])
    fig = compute_figure(runs)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert fig.get_size_inches()[0] == 3.5  # one column of a two-column paper
    assert ax.get_ylabel() == "final mean test error"  # one quantity per axis
    fig.canvas.draw()
    assert all(t.get_fontsize() >= 8 for t in fig.findobj(matplotlib.text.Text) if t.get_text())
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(shown) >= 3, shown  # the range is a factor of 3: more than two labels still
    out = tmp_path / "fig.png"
    fig.savefig(out, dpi=300)
    assert matplotlib.image.imread(out).shape[1] == 1050


def test_the_pareto_front_is_drawn_on_top_or_not_at_all(tmp_path):
    alone = collect([_runs(tmp_path / "a", [{"error": 0.3}])])
    assert "Pareto front" not in [line.get_label() for line in compute_figure(alone).axes[0].get_lines()]
    specs = [{"learner": "finetune", "budget": 1e9, "error": 0.4}, {"learner": "finetune", "budget": 4e9, "error": 0.2},
             {"learner": "conv_prune", "sparsity": 0.5, "budget": 1e9, "error": 0.35}]
    lines = {line.get_label(): line for line in compute_figure(collect([_runs(tmp_path / "b", specs)])).axes[0].get_lines()}
    front = lines["Pareto front"]
    assert front.get_zorder() > max(line.get_zorder() for name, line in lines.items() if name != "Pareto front")
    assert list(front.get_xdata())[0] == 1e9  # starts at the cheapest point: conv_prune at half the compute


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(1, 0.9), (2, 0.95), (3, 0.5), (3, 0.4), (5, 0.45), (8, 0.1)]
    assert pareto_front(points) == [(1, 0.9), (3, 0.4), (8, 0.1)]


def test_the_table_keeps_its_columns_on_a_pipe(tmp_path):
    specs = [{"learner": "conv_prune", "sparsity": 0.5, "lr": 0.1}, {"learner": "finetune"}]
    buffer = io.StringIO()
    console = Console(file=buffer, width=80)  # a pipe: not a terminal, rich's default 80 columns
    print_table(console, render_table(compare_rows(collect([_runs(tmp_path, specs)]))))
    text = buffer.getvalue()
    assert "│ conv_prune (train.lr=0.1) │ transfer │" in text  # sparsity 0.5: the YAML default
    assert "│ finetune (train.lr=0.05)" in text and "compute measure" in text
    assert console.width == 80  # the console is left as it was


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    from nevisbench.config import compose
    from nevisbench.run.runner import run

    root = tmp_path_factory.mktemp("runs")
    common = [*TINY, "train.max_steps=4", "budget.milestones=3", f"out_dir={root}", "stream.tasks=[textures,shapes]"]
    return [run(compose([*common, "run_name=a"])), run(compose([*common, "run_name=b", "seed=1"]))]


@pytest.mark.slow
def test_plot_draws_real_runs_with_their_sub_stream_and_anytime_panels(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = run_cli("plot", *map(str, two_runs), "--out", str(out), "--x", "seconds", "--anytime")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    image = matplotlib.image.imread(out)
    assert image.shape[1] == 2100 and image.std() > 0.05  # two panel columns of 3.5 in at 300 dpi, not blank


@pytest.mark.slow
def test_the_analysis_notebook_labels_runs_as_compare_does_and_shows_the_seed(two_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("NEVISBENCH_RUNS", str(two_runs[0].parent / "*"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    labels = {r.label for r in collect(two_runs)}
    assert "2 finished runs" in text and labels == {"finetune"} and "finetune (seed 1)" in text
    assert "seeds 2" in text and "objects" in text  # compare's row: the two seeds are one configuration
    assert any("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))
    assert (tmp_path / "compute_performance.png").is_file()


@pytest.mark.slow
def test_plot_refusals_are_one_line(tmp_path):
    proc = run_cli("plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "holds no finished run" in proc.stderr and not (tmp_path / "x.png").exists()
    _runs(tmp_path / "runs", [{}])
    proc = run_cli("plot", str(tmp_path / "runs"), "--out", str(tmp_path / "x.xyz"))
    assert proc.returncode == 2 and "unknown format '.xyz'. Valid: .png, .pdf, .svg" in proc.stderr
    assert not (tmp_path / "x.xyz").exists()
    (tmp_path / "runs" / "000" / "summary.json").write_text("[1, 2]")
    proc = run_cli("plot", str(tmp_path / "runs"), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: skipped {tmp_path / 'runs' / '000' / 'summary.json'} is not a run summary; delete it and resume to "
        "write it again",
        "error: None of the 1 run folder(s) given could be read (see the warnings above)"]


def test_runs_without_the_chosen_compute_axis_are_left_out_with_one_warning(tmp_path):
    from nevisbench.analysis import plot_comparison

    runs = collect([_runs(tmp_path / "runs", [{"seed": 0}, {"seed": 1}])])  # their points have no seconds
    warnings: list[str] = []
    plot_comparison(runs, tmp_path / "f.png", x="seconds", warn=warnings.append)
    (warning,) = warnings
    assert warning.startswith("2 run(s) record no 'seconds' compute") and (tmp_path / "f.png").is_file()


def test_a_figure_of_many_studies_and_configurations_still_fits_a_page(tmp_path):
    warnings: list[str] = []
    studies = collect([_runs(tmp_path / "a", [{"tasks": (f"task{i}",)} for i in range(20)])], warn=warnings.append)
    fig = compute_figure(studies, warn=warnings.append)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 12 and fig.get_size_inches()[1] < 25
    assert warnings[-1].startswith("the runs make 20 panels")
    fig = compute_figure(collect([_runs(tmp_path / "b", [{"lr": i / 100} for i in range(40)])]))
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 31 and texts[-1] == "... and 10 more (see compare's table)"  # 40 configurations
