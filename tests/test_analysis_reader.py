"""The one reader of run folders (`nevisbench.analysis.runs`): every malformed `summary.json` or
`config.yaml` is one warning naming the file and the reason, never a traceback; the rest is read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli

from nevisbench.analysis.runs import UnreadableRun, load_runs, read_run


def good_summary(*, error: float = 0.3, seed: int = 0) -> dict[str, Any]:
    tasks = [{"task": name, "index": i, "status": "ok", "domain": domain, "test_error": error, "num_classes": 10,
              "flops": {"train": 1e9, "search": 0.0, "executed": {"train": 2e9, "search": 0.0}}}
             for i, (name, domain) in enumerate((("shapes", "object"), ("digits", "ocr")))]
    point = {"flops": 2e9, "flops_executed": 4e9, "seconds": 3.0, "error": error, "includes_search": True}
    return {"learner": "finetune", "learner_config": {"name": "finetune"}, "scenario": "transfer", "stream": "demo",
            "seed": seed, "budget": {"flops_per_task": 1e9, "measure": "algorithmic"}, "final_mean_error": error,
            "point": point, "point_without_search": point, "tasks": tasks,
            "anytime_curve": [{"flops": 2e8, "mean_error": 0.6}, {"flops": 2e9, "mean_error": error}],
            "sub_streams": {"objects": {"final_mean_error": error}, "ood": {"final_mean_error": error}}}


def good_config(seed: int = 0) -> dict[str, Any]:
    return {"seed": seed, "scenario": "transfer", "stream": {"name": "demo", "tasks": None},
            "train": {"max_steps": 10, "lr": 0.05}, "learner": {"name": "finetune"}}


def write_run(folder: Path, summary: Any = None, config: Any = None) -> Path:
    """A run folder; `summary`/`config` as objects (dumped) or as raw bytes/str (written as is)."""
    folder.mkdir(parents=True)
    for name, value, dump in (("summary.json", summary, json.dumps), ("config.yaml", config, yaml.safe_dump)):
        value = value if value is not None else (good_summary() if name == "summary.json" else good_config())
        path = folder / name
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if isinstance(value, str) else dump(value))
    return folder


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    summary = good_summary()
    change(summary)
    return summary


def _set(path: str, value: Any) -> dict[str, Any]:
    def change(summary: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = summary
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return _edit(change)


_DELETE = object()
_DEEP = "[" * 100_000 + "]" * 100_000

# (name, summary.json content, config.yaml content, words the warning must contain)
MALFORMED: list[tuple[str, Any, Any, str]] = [
    ("point-a-list", _set("point", [2e9, 0.3]), None, "point is [2000000000.0, 0.3], not a mapping"),
    ("point-without-error", _set("point.error", _DELETE), None, "point has no error"),
    ("point-without-flops", _set("point.flops", _DELETE), None, "point has no flops"),
    ("error-a-string", _set("point.error", "0.3"), None, "point.error is '0.3', not a number"),
    ("flops-a-string", _set("point.flops", "2e9"), None, "point.flops is '2e9', not a number"),
    ("error-nan", 'NaN'.join(json.dumps(_set("point.error", 123.0)).split("123.0")), None, "point.error is nan"),
    ("flops-infinite", 'Infinity'.join(json.dumps(_set("point.flops", 123.0)).split("123.0")), None, "point.flops is inf"),
    ("error-above-one", _set("point.error", 3.5), None, "point.error is 3.5, not a finite number in [0, 1]"),
    ("flops-negative", _set("point.flops", -1.0), None, "point.flops is -1.0"),
    ("flops-beyond-any-run", _set("point.flops", 1.7e308), None, "point.flops is 1.7e+308, not a finite number in [0, 1e+30]"),
    ("error-a-bool", _set("point.error", True), None, "point.error is True, not a number"),
    ("deep-json", _DEEP, None, "is damaged (maximum recursion depth"),
    ("empty-summary", "", None, "is damaged (Expecting value"),
    ("summary-not-utf8", b"\xff\xfe{\x00", None, "is damaged ('utf-8' codec can't decode"),
    ("summary-not-json", "{learner: finetune", None, "is damaged (Expecting property name"),
    ("summary-a-list", [1, 2], None, "is not a run summary; delete it and resume"),
    ("summary-null", "null", None, "is not a run summary"),
    ("learner-missing", _set("learner", _DELETE), None, "learner is None, not a name"),
    ("learner-a-number", _set("learner", 7), None, "learner is 7, not a name"),
    ("stream-null", _set("stream", None), None, "stream is None, not a name"),
    ("tasks-missing", _set("tasks", _DELETE), None, "is not a run summary"),
    ("tasks-a-mapping", _set("tasks", {"shapes": 0.3}), None, "tasks is not a list"),
    ("task-a-string", _set("tasks.0", "shapes"), None, "tasks[0] is 'shapes', not a mapping"),
    ("task-error-a-string", _set("tasks.1.test_error", "low"), None, "tasks[1].test_error is 'low', not a number"),
    ("task-flops-a-string", _set("tasks.0.flops.train", "1e9"), None, "tasks[0].flops.train is '1e9'"),
    ("budget-a-list", _set("budget", [1e9]), None, "budget is [1000000000.0], not a mapping"),
    ("budget-a-string", _set("budget.flops_per_task", "1e9"), None, "budget.flops_per_task is '1e9', not a number"),
    ("measure-unknown", _set("budget.measure", "vibes"), None, "budget.measure is 'vibes'; valid: algorithmic, executed"),
    ("seed-a-string", _set("seed", "0"), None, "seed is '0', not an integer"),
    ("sub-streams-a-list", _set("sub_streams", ["objects"]), None, "sub_streams is ['objects'], not a mapping"),
    ("sub-point-a-list", _set("sub_streams.objects", {"point": [1, 2]}), None, "sub_streams.objects.point is [1, 2]"),
    ("anytime-a-mapping", _set("anytime_curve", {"flops": 1}), None, "anytime_curve is not a list"),
    ("anytime-nan", 'NaN'.join(json.dumps(_set("anytime_curve.0.mean_error", 123.0)).split("123.0")), None,
     "anytime_curve[0].mean_error is nan"),
    ("learner-config-a-list", _set("learner_config", ["finetune"]), None, "learner_config is ['finetune']"),
    ("no-point-no-error", _edit(lambda s: s.update(point=None, final_mean_error=None)), None, "did every task fail?"),
    ("config-python-tag", None, "seed: !!python/object/apply:os.system ['echo hacked']\n", "not plain YAML"),
    ("config-empty", None, "", "a YAML NoneType, not a mapping"),
    ("config-not-utf8", None, b"seed: \xff\n", "not UTF-8"),
    ("config-a-list", None, "- seed\n- 0\n", "a YAML list, not a mapping"),
    ("config-not-yaml", None, "seed: [0\n", "not plain YAML"),
    ("config-deep", None, _DEEP, "config.yaml"),
    ("huge-integer", '{"learner": ' + "9" * 5000 + "}", None, "not JSON (Exceeds the limit"),
    ("error-a-huge-integer", _set("point.error", 10**400), None, "point.error is 1000"),
    ("config-huge-integer", None, "seed: " + "9" * 5000 + "\n", "not a run config (Exceeds the limit"),
    ("config-alias-bomb", None, "a: &a {x: 1, y: 1, z: 1}\n" + "".join(
        f"{k}: &{k} {{p: *{j}, q: *{j}, r: *{j}, s: *{j}}}\n" for j, k in zip("abcdefghijklmn", "bcdefghijklmno", strict=False)),
     "more than 100000 entries"),
    ("x-unknown", _set("point.x", "train+joules"), None, "point.x is 'train+joules'; valid: train+search, train,"),
    ("x-a-list", _set("point.x", ["train"]), None, "point.x is ['train']; valid:"),
    ("config-steps-a-string", _set("budget.flops_per_task", None), {**good_config(), "train": {"max_steps": "many"}},
     "config train.max_steps is 'many', not a number"),
]


@pytest.mark.parametrize(("summary", "config", "words"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_the_reader_refuses_each_malformed_shape_in_one_line_naming_the_file(tmp_path, summary, config, words):
    folder = write_run(tmp_path / "run", summary, config)
    with pytest.raises(UnreadableRun) as caught:
        read_run(folder)
    message = str(caught.value)
    bad_file = "config.yaml" if summary is None else "summary.json"
    assert message.startswith(str(folder / bad_file)), message
    assert words in message and "\n" not in message and len(message) < 400, message


def test_load_runs_skips_each_unreadable_run_with_one_warning_and_reads_the_rest(tmp_path):
    for i, (name, summary, config, _) in enumerate(MALFORMED):
        write_run(tmp_path / "runs" / f"{i:02d}-{name}", summary, config)
    write_run(tmp_path / "runs" / "zz-good")
    warnings: list[str] = []
    runs = load_runs([tmp_path / "runs"], warn=warnings.append)
    assert [r.run_dir.name for r in runs] == ["zz-good"]
    assert len(warnings) == len(MALFORMED)
    for warning, (name, *_) in zip(warnings, MALFORMED, strict=False):
        assert f"-{name}/" in warning and "\n" not in warning


def test_shapes_that_are_odd_but_readable_are_read(tmp_path):
    """A config with `stream: null` or no `train`, a run without config.yaml, a summary without
    a point (computed from its tasks, as the runner does): read, not refused."""
    plain = write_run(tmp_path / "a", config={**good_config(), "stream": None, "train": None})
    no_point = write_run(tmp_path / "b", _edit(lambda s: [s.pop("point"), s.pop("point_without_search")]))
    no_config = write_run(tmp_path / "c")
    (no_config / "config.yaml").unlink()
    assert read_run(plain).point["flops"] == 2e9
    assert read_run(no_point).point == {"flops": 2e9, "flops_executed": 4e9, "seconds": 0.0, "error": 0.3}
    assert read_run(no_config).seed == 0


def test_the_x_axis_of_a_run_is_its_own_and_older_runs_keep_theirs(tmp_path):
    """A point's `x` names the compute it sums; a summary without a point is recomputed over the
    kinds its budget.x names (evaluation included); runs from before budget.x keep their axis."""
    def with_eval(summary):
        for task in summary["tasks"]:
            task["flops"]["eval"] = 5e8
        summary.pop("point"), summary.pop("point_without_search")
        summary["budget"]["x"] = "train+eval"
    recomputed = read_run(write_run(tmp_path / "a", _edit(with_eval)))
    assert recomputed.x_kinds == "train+eval" and recomputed.point["flops"] == 3e9
    assert recomputed.point_without_search["flops"] == 2e9
    old = read_run(write_run(tmp_path / "b", _edit(lambda s: s["point"].update(includes_search=False))))
    assert old.x_kinds == "train"
    assert read_run(write_run(tmp_path / "c")).x_kinds == "train+search"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["compare", "plot"])
def test_compare_and_plot_draw_the_readable_runs_and_warn_once_per_malformed_one(tmp_path, command):
    for i, (name, summary, config, _) in enumerate(MALFORMED):
        write_run(tmp_path / "runs" / f"{i:02d}-{name}", summary, config)
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"zz-good-{seed}", good_summary(error=0.3 + seed / 10, seed=seed), good_config(seed))
    out = tmp_path / "figure.png"
    proc = run_cli(command, str(tmp_path / "runs"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(MALFORMED) and all(line.startswith("warning: skipped ") for line in lines)
    for line, (name, *_) in zip(lines, MALFORMED, strict=False):
        assert f"-{name}/" in line
    assert out.stat().st_size > 10_000


def test_a_folder_whose_every_run_is_unreadable_is_one_error(tmp_path):
    write_run(tmp_path / "runs" / "a", "not json")
    with pytest.raises(Exception, match="None of the 1 run folder"):
        load_runs([tmp_path / "runs"], warn=lambda message: None)


def test_an_unfinished_run_among_others_is_warned_of_and_skipped(tmp_path):
    write_run(tmp_path / "runs" / "done")
    (tmp_path / "runs" / "running").mkdir()  # no summary.json yet: e.g. runs/* while a run trains
    warnings: list[str] = []
    runs = load_runs(sorted((tmp_path / "runs").iterdir()), warn=warnings.append)
    assert [r.run_dir.name for r in runs] == ["done"]
    (warning,) = warnings
    assert warning.startswith(f"skipped '{tmp_path / 'runs' / 'running'}' holds no finished run")
