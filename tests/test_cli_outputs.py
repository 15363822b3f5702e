"""Every command's output: `--json` through one serialiser for every registered learner and option,
tables that keep their columns on a pipe, plugin hooks under `flops` wrapped as under `run`, and
`nevisbench flops` refusing what cannot fit in memory (issue 34)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import register_learner, run_cli
from omegaconf import OmegaConf

from nevisbench import Learner, LearnerConfig
from nevisbench.cli import main
from nevisbench.config import compose, group_options
from nevisbench.errors import ConfigError, PluginError
from nevisbench.io.jsonout import dumps
from nevisbench.registry import get_learner_class


def _json_of(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_the_serialiser_takes_what_a_report_may_hold():
    @dataclass
    class Point:
        x: float

    value = {"list": OmegaConf.create([1, 2]), "dict": OmegaConf.create({"a": [0.5]}), "np": np.float32(0.25),
             "array": np.arange(3), "tensor": torch.tensor([1.5]), "path": Path("/tmp/x"), "tuple": (1, "a"),
             "set": {2, 1}, "nan": float("nan"), "inf": np.float64("inf"), "point": Point(1.0), 3: "int key"}
    assert json.loads(dumps(value)) == {"list": [1, 2], "dict": {"a": [0.5]}, "np": 0.25, "array": [0, 1, 2],
                                        "tensor": [1.5], "path": "/tmp/x", "tuple": [1, "a"], "set": [1, 2],
                                        "nan": None, "inf": None, "point": {"x": 1.0}, "3": "int key"}


@pytest.mark.parametrize("what", ["learners", "streams", "tasks", "backbones"])
def test_every_list_json_parses(capsys, what):
    rows = _json_of(capsys, "list", what, "--json")
    assert isinstance(rows, list) and rows


def test_data_status_json_parses(capsys, tmp_path):
    rows = _json_of(capsys, "data", "status", "mnist", "--root", str(tmp_path), "--json", "--quick")
    assert rows and rows[0]["key"] == "mnist"


@pytest.mark.parametrize("option", group_options("learner"))
def test_flops_json_parses_for_every_learner(capsys, option):
    """`flops learner=learned_prune --json` ended in `ListConfig is not JSON serializable`. An
    installed plugin that cannot load is one error line instead (exit 2), never a traceback."""
    argv = ["flops", f"learner={option}", "data.image_size=32", "--num-classes", "3", "--json"]
    try:
        try:
            name = compose([f"learner={option}"]).learner.name
        except ConfigError:  # a learner for another backbone family (a prompt on a ViT) refuses the default one
            name = compose([f"learner={option}", "backbone.name=vit_tiny"]).learner.name
            argv.insert(2, "backbone.name=vit_tiny")
        get_learner_class(name)
    except PluginError:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return
    report = _json_of(capsys, *argv)
    assert report["learner"] == option and report["train_step"]["algorithmic"]["total"] > 0
    assert isinstance(report["learner_config"], dict)


@pytest.mark.slow
def test_tables_on_a_pipe_keep_their_columns():
    from nevisbench.backbones import list_backbones

    out = run_cli("list", "backbones", env_extra={"COLUMNS": "80"}).stdout  # a pipe: not a terminal
    assert all(name in out for name in list_backbones()) and "…" not in out


@dataclass
class _Config(LearnerConfig):
    name: str = "raiser"


class RaisesInBeginTask(Learner):
    Config = _Config

    def begin_task(self, task, backbone):
        raise RuntimeError("no module today")


class RaisesInPrepare(Learner):
    Config = _Config

    def prepare(self, backbone):
        raise ValueError("cannot prepare")


@pytest.mark.parametrize(("target", "hook"), [("RaisesInBeginTask", "begin_task(probe)"), ("RaisesInPrepare", "prepare()")])
def test_flops_calls_plugin_hooks_through_the_plugin_wrapper(monkeypatch, capsys, target, hook):
    register_learner(monkeypatch, "raiser", f"test_cli_outputs:{target}")
    assert main(["flops", "learner=raiser", "data.image_size=32"]) == 2  # as `run`: exit 2
    err = capsys.readouterr().err
    assert f"Learner 'raiser' failed in {hook}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_flops_refuses_what_cannot_fit_in_memory_before_building_it(monkeypatch, capsys):
    """`flops backbone.name=vit_l_16 data.image_size=1024` passed 9 GB in three minutes."""
    import time

    from nevisbench.run import footprint

    monkeypatch.setattr(footprint, "available_memory", lambda: 8 * 10**9)
    start = time.perf_counter()
    assert main(["flops", "backbone.name=vit_l_16", "data.image_size=1024"]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 30
    assert "vit_l_16" in err and "GB available" in err and len(err.strip().splitlines()) == 1
    need = footprint.training_bytes("resnet18", 64, 2)
    assert need is not None and sum(need) < 10**9  # what the tests run fits anywhere
