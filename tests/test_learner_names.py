"""One source for a learner's name and defaults: the entry point names the learner, its Config
dataclass agrees, and a YAML option that is the learner itself (configs/learner/<name>.yaml, named
by its file: it writes no `name:`) only restates the dataclass's defaults; every other option (a
variant) names a registered learner."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from nevisbench.config.compose import config_dir
from nevisbench.registry import _entry_points, get_learner_class

BUILT_IN = sorted(n for n, ep in _entry_points().items() if ep.value.startswith("nevisbench.learners."))
OPTIONS = sorted(p.stem for p in (config_dir() / "learner").glob("*.yaml"))


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_entry_point_and_the_config_dataclass_name_the_learner_alike(name):
    assert get_learner_class(name).Config().name == name


@pytest.mark.parametrize("option", OPTIONS)
def test_a_yaml_option_names_a_learner_and_restates_only_its_defaults(option):
    written = yaml.safe_load((config_dir() / "learner" / f"{option}.yaml").read_text()) or {}
    learner = written.get("name", option)  # no `name:`: the learner of the file's name
    assert learner in BUILT_IN, f"{option}.yaml names no registered learner: {learner}"
    assert written.get("name") != option, f"{option}.yaml restates its own name: its file name says it"
    defaults = dataclasses.asdict(get_learner_class(learner).Config())
    assert set(written) <= set(defaults), f"{option}.yaml sets unknown keys {set(written) - set(defaults)}"
    if option == learner:  # the learner's own option: its values are the dataclass defaults
        assert {k: defaults[k] for k in written} == written
