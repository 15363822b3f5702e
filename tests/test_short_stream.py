"""The SHORT streams end to end: listing, preparing from publishers' files through the CLI,
status, running a subset, refusing missing data, and multi-label scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import short_fixtures as F
from conftest import TINY, run_cli

from nevisbench.tasks import get_stream
from nevisbench.tasks.datasets import datasets

REPO = Path(__file__).resolve().parents[1]


def _list(stream: str) -> list[dict]:
    done = run_cli("list", "tasks", "--stream", stream, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_short_streams_are_the_contract() -> None:
    events = _list("short")
    assert len(events) == 24
    assert sum(e["domain"] == "object" for e in events) == 16
    assert [e["key"] for e in events].count("mnist") == 2
    assert events[0]["key"] == "coil100" and events[-1]["key"] == "fashion_mnist"
    assert "imagenet" not in {e["key"] for e in events}
    assert [e["position"] for e in events] == list(range(1, 25))
    assert set(events[0]) == {"key", "name", "year", "position", "domain", "num_classes", "multi_label"}
    assert [e["year"] for e in events] == sorted(e["year"] for e in events)
    assert {e["key"] for e in events if e["multi_label"]} == {"pascal_voc2007", "pascal_voc2012"}
    objects, ood = get_stream("short_objects").tasks, get_stream("short_ood").tasks
    assert len(objects) == 16 and len(ood) == 8
    assert {t.domain for t in ood} == {"ocr", "scene", "face", "texture", "medical"}
    assert [t.key for t in ood].count("mnist") == 2
    heldout = get_stream("short_heldout").tasks
    assert [t.key for t in heldout] == ["stanford_dogs", "cub200_2011", "stanford_cars", "fgvc_aircraft_family"]
    assert all(t.year == 2020 for t in heldout)
    # sub-streams keep SHORT's numbering
    assert [t.position for t in ood][:2] == [2, 9]


def test_subset_keeps_stream_order_and_both_mnist_events() -> None:
    selected = get_stream("short").select(["usps", "mnist", "cifar10"]).tasks
    assert [t.key for t in selected] == ["mnist", "cifar10", "usps", "mnist"]


@pytest.mark.slow
def test_prepare_status_and_run_from_publishers_files(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    for key in ("mnist", "cifar10", "usps", "pascal_voc2007"):
        F.build(key, src / key)
    done = run_cli("data", "prepare", "mnist", "cifar10", "usps", "pascal_voc2007", "--root", str(root),
                   "--source-dir", str(src), "--no-verify", "--size", "16", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--no-verify" in done.stdout and "prepared" in done.stdout

    status = run_cli("data", "status", "--root", str(root), "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["key"]: r for r in json.loads(status.stdout)}
    assert len(rows) == 27
    assert {k for k, r in rows.items() if r["status"] == "ready"} == {"mnist", "cifar10", "usps", "pascal_voc2007"}
    assert rows["mnist"]["splits"] == {"train": 14, "dev": 3, "dev_test": 3, "test": 7} and rows["mnist"]["bytes"] > 0
    assert rows["coil100"]["status"] == "missing"
    table = run_cli("data", "status", "usps", "coil100", "--root", str(root))
    assert re.search(r"usps\s+.*ready", table.stdout) and re.search(r"coil100\s+.*missing", table.stdout)

    out = tmp_path / "runs"
    run = run_cli("run", "stream=short", "stream.tasks=[mnist,cifar10,usps,pascal_voc2007]", "learner=finetune",
                  "train.max_steps=5", "backbone.weights=none", f"data.root={root}", f"out_dir={out}", "run_name=r",
                  *[o for o in TINY if not o.startswith("train.max_steps")], "backbone.name=resnet18")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "r" / "summary.json").read_text())
    assert [t["task"] for t in summary["tasks"]] == ["mnist", "pascal_voc2007", "cifar10", "usps", "mnist"]
    assert all(t["status"] == "ok" and t["steps"] == 5 for t in summary["tasks"])
    voc = summary["tasks"][1]
    assert voc["metric"] == "1-mAP" and 0.0 <= voc["test_error"] <= 1.0 and voc["num_test"] == 5
    assert {t["metric"] for t in summary["tasks"] if t["task"] != "pascal_voc2007"} == {"top1_error"}
    assert summary["skipped_tasks"] == []

    # missing tasks: refused before training, naming them and the command that prepares them
    refused = run_cli("run", "stream=short", f"data.root={root}", f"out_dir={out}", "run_name=refused", *TINY)
    assert refused.returncode == 2
    message = refused.stderr
    assert "19 task(s) of stream 'short' are not prepared" in message.replace("\n", " ")
    assert "nevisbench data prepare coil100 pascal_voc2005" in message.replace("\n", " ")
    assert "Traceback" not in message and not (out / "refused").exists()

    # allow_missing: the prepared ones run, loudly, and summary.json lists the skipped ones
    partial = run_cli("run", "stream=short", "stream.tasks=[coil100,usps]", "stream.allow_missing=true", f"data.root={root}",
                      f"out_dir={out}", "run_name=partial", "backbone.weights=none", "backbone.name=resnet18", *TINY)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "SKIPPING 1 unprepared task(s): coil100" in " ".join(partial.stdout.split())
    summary = json.loads((out / "partial" / "summary.json").read_text())
    assert [t["task"] for t in summary["tasks"]] == ["usps"]
    assert summary["skipped_tasks"] == [{"task": "coil100", "reason": "missing: not prepared"}]


def test_docs_list_every_task_with_source_rule_and_deviations() -> None:
    text = (REPO / "docs" / "short-stream.md").read_text()
    for key, dataset in datasets().items():
        assert f"`{key}`" in text, key
        assert dataset.rule in text, key
        for deviation in dataset.deviations:
            assert deviation in text, (key, deviation)
        for source in dataset.files:
            assert (source.pattern or source.name) in text, (key, source.name)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["data prepare nosuchtask --root R --source-dir .", "data prepare short --root R"])
def test_bad_prepare_input_is_one_line(bad: str, tmp_path: Path) -> None:
    done = run_cli(*bad.replace("R", str(tmp_path / "r")).split())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Unknown task or stream 'nosuchtask'" in done.stderr or "--source-dir DIR" in done.stderr
