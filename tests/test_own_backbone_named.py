"""A learner bringing its own network (issue 31): no warning about a configured backbone that was never
built or never ran, and the network is recorded by the name the learner declares."""

from __future__ import annotations

import pytest
from backbone_learners import OwnNetwork, OwnRegistryNetwork
from conftest import TINY, register_learner

from nevisbench.api.learner import check_api
from nevisbench.config import compose
from nevisbench.run.runner import run


class NamedOwnNetwork(OwnNetwork):
    backbone_name = "tiny_cnn"


class BadName(OwnNetwork):
    backbone_name = 3


def _run(tmp_path, capsys, *overrides):
    cfg = compose([*TINY, "stream.tasks=[faces]", "budget.milestones=0", "backbone.weights=none", f"out_dir={tmp_path}",
                   *overrides])
    import json

    summary = json.loads((run(cfg) / "summary.json").read_text())
    return summary, capsys.readouterr().out


def test_a_learners_own_network_is_named_as_declared_and_no_resnet_warning(tmp_path, capsys, monkeypatch):
    register_learner(monkeypatch, "named_own", "test_own_backbone_named:NamedOwnNetwork")
    summary, out = _run(tmp_path, capsys, "learner=named_own")
    assert summary["backbone"]["name"] == "tiny_cnn" and summary["backbone"]["arch"] == "_Tiny"
    assert "RANDOM initialisation" not in out  # no resnet18 was built
    assert "replaced the run's" not in out  # it declared its network: nothing was built, nothing to say


@pytest.mark.slow
def test_a_swapped_in_network_gets_no_warning_about_the_configured_one(tmp_path, capsys, monkeypatch):
    register_learner(monkeypatch, "swap", "backbone_learners:OwnRegistryNetwork")
    assert OwnRegistryNetwork.backbone_name is None
    summary, out = _run(tmp_path, capsys, "learner=swap")
    assert summary["backbone"]["name"] == "mobilenet_v3_small"
    assert "resnet18 starts from RANDOM" not in out  # the resnet18 built for it never ran
    # an old plugin swapping its network in prepare(): the resnet18 was built for nothing, and the run says how not to
    assert "replaced the run's resnet18 in prepare() (its mobilenet_v3_small runs)" in " ".join(out.split())
    assert "brings_backbone = True" in out


def test_the_configured_backbone_still_gets_its_warning(tmp_path, capsys):
    _, out = _run(tmp_path, capsys, "learner=finetune")
    assert "resnet18 starts from RANDOM initialisation" in out


def test_a_backbone_name_that_is_not_a_string_is_refused_by_the_api_check():
    assert "backbone_name = 3: it must be None or a non-empty string" in check_api(BadName)
    assert check_api(NamedOwnNetwork) is None
