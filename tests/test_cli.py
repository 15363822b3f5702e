"""The real `nevisbench` command in a subprocess."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, run_cli


@pytest.mark.slow
def test_run_on_a_reduced_demo_prints_tables_and_writes_the_files(tmp_path):
    proc = run_cli("run", "learner=finetune", "seed=1", *TINY, "stream.tasks=[textures,shapes]", f"out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "Task 1/2: textures (texture, 4 classes)" in proc.stdout and "Task 2/2: shapes (object, 5 classes)" in proc.stdout
    assert "Summary: finetune on demo (transfer)" in proc.stdout
    assert "RANDOM initialisation" in proc.stdout  # weights=none is said loudly
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.endswith("-finetune")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "results.jsonl", "summary.json"]
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    required = {"task", "index", "domain", "num_classes", "test_error", "steps", "flops", "wall_seconds"}
    assert all(required <= set(line) for line in lines)
    assert all(set(line["flops"]) >= {"train", "eval", "total"} for line in lines)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"learner", "stream", "scenario", "num_tasks", "mean_test_error", "total_flops", "tasks"} <= set(summary)
    assert summary["tasks"] == lines and summary["seed"] == 1
    assert "seed: 1" in (run_dir / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["learner=nope"], "Unknown learner 'nope'. Valid: adp1x1, block_0to0_ft_all"),
        (["stream=nope"], "Unknown stream 'nope'. Valid: demo"),
        (["scenario=nope"], "Valid: continual, transfer"),
        (["foo.bar=1"], "Unknown config key 'foo.bar'"),
        (["train.max_steps=abc"], "'abc' is not an integer"),
        (["seed=-1"], "it must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, fragment, tmp_path):
    proc = run_cli("run", *args, f"out_dir={tmp_path}")
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.slow
def test_out_dir_that_is_a_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    proc = run_cli("run", f"out_dir={target}")
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr
    assert target.read_text() == "precious"


@pytest.mark.slow
def test_list_learners_streams_and_tasks_as_json():
    learners = {row["name"]: row for row in json.loads(run_cli("list", "learners", "--json").stdout)}
    paper = {"finetune", "weight_prune", "conv_prune", "channel_prune", "ft_head", "adp1x1",
             *(f"ft_block_{x}to3" for x in range(4)), *(f"block_0to{x}_ft_all" for x in range(3))}
    assert paper <= set(learners)
    assert learners["ft_block_2to3"]["learner"] == "ft_block" and learners["ft_block_2to3"]["config"] == {"first_trained_block": 2}
    assert learners["conv_prune"]["config"]["sparsity"] == 0.5
    streams = json.loads(run_cli("list", "streams", "--json").stdout)
    assert streams[0]["name"] == "demo" and streams[0]["num_tasks"] == 4
    tasks = json.loads(run_cli("list", "tasks", "--stream", "demo", "--json").stdout)
    assert [t["key"] for t in tasks] == ["digits", "textures", "faces", "shapes"]
    assert {t["domain"] for t in tasks} == {"ocr", "texture", "face", "object"}


@pytest.mark.slow
def test_list_tasks_of_unknown_stream_is_a_clear_error():
    proc = run_cli("list", "tasks", "--stream", "shrot")
    assert proc.returncode == 2 and "Unknown stream 'shrot'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_flops_json_reports_train_and_eval_steps_per_image():
    proc = run_cli("flops", "backbone.name=resnet18", "data.image_size=32", "--num-classes", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["num_classes"] == 10 and report["image_size"] == 32 and report["backbone"]["name"] == "resnet18"
    for step in ("train_step", "eval_step"):
        for measure in ("algorithmic", "executed"):
            row = report[step][measure]
            assert row["total"] == row["forward"] + row["backward"] > 0
    assert report["train_step"]["algorithmic"] == report["train_step"]["executed"]  # dense finetune
    assert report["eval_step"]["executed"]["backward"] == 0
    assert report["train_step"]["executed"]["forward"] == report["eval_step"]["executed"]["forward"]


@pytest.mark.slow
def test_flops_of_resnet50_at_224_match_the_reference_figure():
    from nevisbench.config import compose
    from nevisbench.run.probe import step_flops

    report = step_flops(compose(["backbone.name=resnet50", "data.image_size=224"]), num_classes=1000)
    assert report["train_step"]["algorithmic"]["total"] == pytest.approx(24.30e9, rel=0.005)
    assert report["train_step"]["algorithmic"]["forward"] == pytest.approx(8.18e9, rel=0.005)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run_name=a/b"], "Invalid value for 'run_name': 'a/b'; it must be one folder name"),
        (["run_name=../x"], "Invalid value for 'run_name': '../x'"),
        (["seed=${oc.env:HOME}"], "interpolations are not allowed in overrides"),
        (["budget.flops_per_task=nan"], "Invalid value for 'budget.flops_per_task': nan; it must be a finite number"),
        (["hydra.run.dir=x"], "Unknown config key 'hydra.run.dir'"),
        (["learner=finetune,conv_prune"], "one value per key here"),
    ],
)
def test_hardened_config_errors_exit_2_in_one_line_and_write_nothing(args, fragment, tmp_path):
    proc = run_cli("run", *args, f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no run folder, no Hydra outputs/ folder


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "100000000", "1e8"])
def test_flops_refuses_a_head_size_out_of_range_in_one_line(value):
    proc = run_cli("flops", "--num-classes", value)
    assert proc.returncode == 2 and "--num-classes" in proc.stderr and "Traceback" not in proc.stderr
