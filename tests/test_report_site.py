"""`nevisbench report`: the static site built from run folders written as the harness writes them
(summary.json with its task lines, config.yaml): studies kept apart, a malformed run one warning,
every page's links and scripts local and present, and each section drawn from the run's own numbers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nevisbench.analysis.site import MARKER, build_site
from nevisbench.cli import main

TASKS = (("digits", "ocr"), ("textures", "texture"), ("faces", "face"))


def _line(index: int, task: str, domain: str, error: float, budget: float, *, flagged: bool = False) -> dict:
    line = {"task": task, "index": index, "status": "ok", "domain": domain, "metric": "top1_error", "test_error": error,
            "dev_test_error": error + 0.01, "dev_error": error + 0.02, "steps": 4, "wall_seconds": 1.5,
            "flops": {"train": budget, "eval": budget / 10, "search": budget / 4, "total": budget * 1.35, "outside": 123.0,
                      "executed": {"train": budget * 2, "eval": budget / 10, "search": budget / 4},
                      "seconds": {"train": 1.0, "eval": 0.2, "search": 0.3}},
            "anytime": [{"train_flops": budget * f, "dev_error": error + 0.3 * (1 - f), "fraction": f} for f in (0.25, 1.0)],
            "audit": {"ratio": 4.2 if flagged else 1.01, "flagged": flagged, "reason": "unexplained CPU time" if flagged else None,
                      "cpu_seconds": 9.0, "explained_seconds": 2.1 if flagged else 8.9, "threshold": 1.5},
            "search": {"winner": 1, "trials": [
                {"trial": 0, "overrides": {"train.lr": 0.1}, "dev_error": 0.6, "train_flops": 11.0, "eval_flops": 2.0, "status": "ok"},
                {"trial": 1, "overrides": {"train.lr": 0.01}, "dev_error": 0.4, "train_flops": 11.0, "eval_flops": 2.0, "status": "ok"}]},
            "learner_report": {"kept_ratio": 0.5, "kept_channels": {"layer1.0": [32], "layer2.0": [40, 8]}}}
    if index:
        line["revisit"] = {"test_error": [0.3 + 0.1 * j for j in range(index)], "flops": 5.0}
    return line


def write_run(root: Path, name: str, learner: str, seed: int, budget: float, error: float, *, tasks=TASKS,
              scenario: str = "continual", flagged: bool = False) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    lines = [_line(i, t, d, error, budget, flagged=flagged and i == 0) for i, (t, d) in enumerate(tasks)]
    total = budget * len(tasks)
    summary = {"learner": learner, "learner_config": {"name": learner}, "scenario": scenario, "stream": "demo",
               "seed": seed, "budget": {"flops_per_task": budget, "measure": "algorithmic", "x": "train+search"},
               "final_mean_error": error, "tasks": lines, "backbone": {"name": "resnet18", "arch": "ResNet"},
               "point": {"flops": total * 1.25, "flops_executed": total * 2, "seconds": 4.0, "error": error, "x": "train+search"},
               "point_without_search": {"flops": total, "error": error, "x": "train"},
               "flops": {"train": total, "eval": total / 10, "search": total / 4, "outside": 369.0, "executed": {"train": total * 2},
                         "seconds": {"train": 3.0}},
               "provenance": {"nevisbench": "0.1.0", "commit": "abc123", "torch": "2.x", "lightning": "2.y",
                              "device": {"accelerator": "cpu", "name": "test cpu"}}}
    if scenario == "continual":
        summary["continual"] = {"tasks": [t for t, _ in tasks], "average_accuracy": 0.6, "backward_transfer": -0.05,
                                "forgetting": 0.07, "accuracy_matrix": [[0.7, None, None], [0.65, 0.6, None], [0.6, 0.55, 0.62]]}
    (folder / "summary.json").write_text(json.dumps(summary))
    config = {"seed": seed, "scenario": scenario, "run_name": name, "learner": {"name": learner},
              "train": {"lr": 0.05}, "budget": {"flops_per_task": budget}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture
def study(tmp_path: Path) -> Path:
    runs = tmp_path / "sweep" / "runs"
    for seed in (0, 1):
        for budget in (1e9, 4e9):
            for learner, base in (("finetune", 0.5), ("conv_prune", 0.45)):
                write_run(runs, f"{learner}-{budget:g}-s{seed}", learner, seed, budget, base - 0.05 * (budget > 1e9) + 0.01 * seed,
                          flagged=(learner, budget, seed) == ("conv_prune", 4e9, 1))
    return tmp_path / "sweep"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]


def _figures(page: Path) -> dict:
    found = re.search(r'<script type="application/json" id="figures">(.*?)</script>', page.read_text(), re.S)
    assert found, page
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_every_link_and_script_is_local_and_present(study: Path, tmp_path: Path):
    summary = build_site([study], tmp_path / "site")
    assert (summary.runs, summary.studies, summary.pages) == (8, 1, 1 + 2 + 8)
    for page in (tmp_path / "site").rglob("*.html"):
        parser = _Refs()
        parser.feed(page.read_text())
        for ref in parser.refs:
            assert not re.match(r"[a-z]+://", ref), (page, ref)  # nothing from the network
            target = ref.split("#")[0]
            assert not target or (page.parent / target).is_file(), (page, ref)
    assert (tmp_path / "site" / "assets" / "plotly.min.js").stat().st_size > 1_000_000


def test_front_figure_has_one_mean_trace_per_configuration_the_seeds_the_front_and_the_flagged_run(study: Path, tmp_path: Path):
    build_site([study], tmp_path / "site")
    index = tmp_path / "site" / "index.html"
    figures = _figures(index)
    front = figures["fig-0"]
    roles = [t["meta"]["role"] for t in front["data"]]
    means = {t["name"]: t for t in front["data"] if t["meta"]["role"] == "mean"}
    assert sorted(means) == ["conv_prune", "finetune"] and roles.count("band") == 2 and roles.count("front") == 1
    assert means["finetune"]["y"] == pytest.approx([0.505, 0.455])  # the seeds' mean at each budget
    assert front["layout"]["xaxis"]["type"] == "log"
    seeds = [t for t in front["data"] if t["meta"]["role"] == "seeds"]
    hovers = [h for t in seeds for h in t["hovertext"]]
    assert len(hovers) == 8 and all("run: " in h and "seed: " in h and "error: " in h for h in hovers)
    assert all((index.parent / href).is_file() for t in seeds for href in t["customdata"])
    (flagged,) = [t for t in front["data"] if t["meta"]["role"] == "flagged"]
    assert flagged["hovertext"] == ["audit flagged: conv_prune-4e+09-s1"]
    text = index.read_text()
    assert "budget.x = train+search" in text and "continual/forgetting" in text and "0.0700" in text


def test_runs_that_are_not_comparable_are_separate_studies_and_a_malformed_run_is_one_warning(study: Path, tmp_path: Path):
    write_run(tmp_path / "other", "two-tasks", "finetune", 0, 1e9, 0.3, tasks=TASKS[:2], scenario="transfer")
    broken = write_run(tmp_path / "other", "broken", "finetune", 0, 1e9, 0.3)
    (broken / "summary.json").write_text('{"tasks": [], "learner": "finetune", "point": {"flops": "many"}}')
    warnings: list[str] = []
    summary = build_site([study, tmp_path / "other"], tmp_path / "site", warn=warnings.append)
    assert summary.runs == 9 and summary.studies == 2
    assert [w for w in warnings if "broken" in w] == [next(w for w in warnings if "broken" in w)]
    figures = _figures(tmp_path / "site" / "index.html")
    per_figure = [{t["meta"]["label"] for t in f["data"] if t["meta"]["role"] == "seeds"} for f in figures.values()
                  if f["data"][0]["meta"]["role"] == "band"]
    counts = sorted(sum(len(t["x"]) for t in f["data"] if t["meta"]["role"] == "seeds") for f in figures.values()
                    if f["data"][0]["meta"]["role"] == "band")
    assert counts == [1, 8] and {"finetune"} in per_figure  # the two-task run is drawn alone, never joined
    assert "broken" in (tmp_path / "site" / "index.html").read_text()  # the warning is on the page too


def test_run_page_shows_matrix_trials_structure_audit_breakdown_and_config_difference(study: Path, tmp_path: Path):
    build_site([study], tmp_path / "site")
    (page,) = (tmp_path / "site" / "run").glob("*conv_prune-4e+09-s1.html")
    text = page.read_text()
    figures = _figures(page)
    (matrix,) = [f for f in figures.values() if f["data"][0]["meta"]["role"] == "accuracy_matrix"]
    assert matrix["data"][0]["z"][2] == [0.6, 0.55, 0.62] and matrix["data"][0]["z"][0][1] is None
    assert "-0.0500" in text and "0.0700" in text  # BWT and forgetting
    assert "train.lr" in text and "winner" in text  # search trials
    assert "kept_channels" in text and "layer2.0" in text and "40, 8" in text  # the learner's report, per layer
    kept = [f for f in figures.values() if f["data"][0]["meta"]["role"] == "bars"]
    assert len(kept) == 3 and kept[0]["data"][0]["x"] == ["layer1.0", "layer2.0"] and kept[0]["data"][0]["y"] == [32, 48]
    assert "audit flagged" in text and "4.2000" in text and "unexplained CPU time" in text
    assert "369 FLOP" in text  # the compute counted outside the step windows
    assert "abc123" in text and "test cpu" in text  # provenance
    difference = text.split("what differs from the study")[1].split("the whole config")[0]
    assert "budget.flops_per_task" in difference and "4000000000.0" in difference and "seed" in difference
    assert "train.lr" not in difference  # the same in every run of the study


def test_report_command_writes_over_its_own_report_and_refuses_anything_else(study: Path, tmp_path: Path, capsys):
    site = tmp_path / "site"
    assert main(["report", str(study), "--out", str(site)]) == 0
    assert (site / MARKER).exists() and "Wrote" in capsys.readouterr().out
    (site / "run" / "stale.html").write_text("old")
    assert main(["report", str(study), "--out", str(site)]) == 0
    assert not (site / "run" / "stale.html").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["report", str(study), "--out", str(mine)]) == 2
    assert "holds other files" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
    assert main(["report", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "s2")]) == 2
    assert "holds no finished run" in capsys.readouterr().err and not (tmp_path / "s2").exists()


def test_the_sweeps_report_is_written_beside_its_comparison_and_a_failure_is_one_warning(study: Path, capsys):
    from rich.console import Console

    from nevisbench import layout
    from nevisbench.analysis.site.command import write_report

    assert write_report(study, Console()) == study / layout.REPORT / "index.html"
    assert (study / layout.REPORT / "index.html").is_file() and "Wrote" in capsys.readouterr().out
    (study / "elsewhere").mkdir()
    (study / "elsewhere" / "notes.txt").write_text("x")
    assert write_report(study / "elsewhere", Console()) is None  # no runs there: warned, nothing raised
    assert "the sweep's report was not written" in capsys.readouterr().err
