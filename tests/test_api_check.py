"""The learner API check (`check_api`, the registry) closes its gaps: methods from a mixin, class
attributes of the wrong type, a version that says what to change, and one broken plugin that no
longer hides the others from `list learners` (issue 34)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest
from conftest import register_learner

from nevisbench import Learner, LearnerConfig
from nevisbench.api.learner import check_api
from nevisbench.cli import main
from nevisbench.errors import PluginError
from nevisbench.registry import get_learner_class


@dataclass
class _Config(LearnerConfig):
    name: str = "mixed"


class OldVerbs:
    def build_module(self, backbone, task):
        return None


class MixedIn(OldVerbs, Learner):
    Config = _Config


class MixinHelper:
    def helper(self):
        return 1


class Helped(MixinHelper, Learner):
    Config = _Config
    helpers = ("helper",)


class NoneHelpers(Learner):
    Config = _Config
    helpers = None


class StringVersion(Learner):
    Config = _Config
    api_version = "2"


class VersionOne(Learner):
    Config = _Config
    api_version = 1


def test_a_retired_verb_from_a_mixin_is_refused():
    problem = check_api(MixedIn)
    assert problem is not None and "build_module()" in problem and "begin_task()" in problem
    assert check_api(Helped) is None


@pytest.mark.parametrize(("cls", "fragment"), [
    (NoneHelpers, "sets helpers = None: it must be a tuple of method names"),
    (StringVersion, "sets api_version = '2': it must be an int (api_version = 2)"),
])
def test_class_attributes_of_the_wrong_type_are_one_line(cls, fragment):
    problem = check_api(cls)
    assert problem is not None and fragment in problem and "\n" not in problem


def test_an_older_api_version_says_what_to_change():
    problem = check_api(VersionOne)
    assert problem is not None and "rename setup(backbone) to prepare(backbone)" in problem
    assert "set api_version = 2" in problem


def test_the_registry_refuses_them_in_one_line(monkeypatch):
    for name, target in (("mixed", "MixedIn"), ("nohelp", "NoneHelpers")):
        register_learner(monkeypatch, name, f"test_api_check:{target}")
        with pytest.raises(PluginError) as info:
            get_learner_class(name)
        assert str(info.value).startswith(f"Learner plugin '{name}'") and "\n" not in str(info.value)


def test_one_broken_plugin_does_not_hide_the_others_from_list_learners(monkeypatch, capsys):
    register_learner(monkeypatch, "stringy", "test_api_check:StringVersion")
    register_learner(monkeypatch, "gone", "no_such_module:Thing")
    assert main(["list", "learners", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["finetune"]["status"] == "ok" and rows["finetune"]["reason"] is None
    assert rows["stringy"]["status"] == "broken" and "api_version = '2'" in rows["stringy"]["reason"]
    assert rows["gone"]["status"] == "broken" and "failed to import" in rows["gone"]["reason"]
    assert main(["list", "learners"]) == 0
    table = capsys.readouterr().out
    assert "broken" in table and "finetune" in table


def test_a_learner_registered_twice_is_refused_alone(monkeypatch):
    from nevisbench import registry

    registry._entry_points.cache_clear()
    monkeypatch.setattr(registry, "_twice", {})
    twice = [EntryPoint(name="dup", value="a:A", group=registry.ENTRY_POINT_GROUP),
             EntryPoint(name="dup", value="b:B", group=registry.ENTRY_POINT_GROUP),
             EntryPoint(name="finetune", value="nevisbench.learners.finetune:FinetuneLearner",
                        group=registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: twice)
    try:
        assert get_learner_class("finetune").__name__ == "FinetuneLearner"
        with pytest.raises(PluginError, match="Learner 'dup' is registered twice: by 'a:A' and by 'b:B'"):
            get_learner_class("dup")
    finally:
        registry._entry_points.cache_clear()


def test_the_refusal_lists_the_hooks_the_harness_calls_and_nothing_else():
    """The list named class attributes (brings_backbone, backbone_families) and task_module as hooks."""

    class Stray(Learner):
        def end_tsk(self, task, module):
            pass

    listed = check_api(Stray).split("(hooks: ")[1].split(")")[0].split(", ")
    assert listed == ["begin_task", "end_task", "load_state_dict", "prepare", "revisit_module", "state_dict", "task_report"]
