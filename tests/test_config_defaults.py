"""One home per default. The values a run starts from are the YAML under `configs/` (what a user
reads, with its comments); the schema (`nevisbench/config/schema.py`) holds the types, and a value
only for a key some option may leave out. Where both name a value, they agree: checked here for the
root config's own sections, each typed group's default option, and the launchers (whose dataclass
and YAML both name every key). Learners: tests/test_learner_names.py."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
import yaml
from omegaconf import MISSING

from nevisbench.config.compose import config_dir
from nevisbench.config.schema import GROUP_SCHEMAS, ProtocolConfig, RootConfig
from nevisbench.sweep.launchers import LAUNCHERS

ROOT = yaml.safe_load((config_dir() / "config.yaml").read_text())
DEFAULT_OPTIONS = {key: value for entry in ROOT["defaults"] if isinstance(entry, dict) for key, value in entry.items()}
TYPED_GROUPS = {**GROUP_SCHEMAS, "protocol": ProtocolConfig}


def _schema_values(schema: type) -> dict[str, Any]:
    """The fields the dataclass gives a value (not MISSING, not required)."""
    values = {}
    for f in dataclasses.fields(schema):
        if f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        elif f.default is not dataclasses.MISSING and f.default is not MISSING and not dataclasses.is_dataclass(f.default):
            values[f.name] = f.default
    return values


def _disagreements(schema: type, written: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {key: (value, written[key]) for key, value in _schema_values(schema).items()
            if key in written and written[key] != value}


SECTIONS = [f.name for f in dataclasses.fields(RootConfig)
            if f.name in ROOT and isinstance(ROOT[f.name], dict) and f.name not in TYPED_GROUPS]


@pytest.mark.parametrize("section", SECTIONS)
def test_the_root_configs_sections_agree_with_the_schema(section):
    assert _disagreements(typing.get_type_hints(RootConfig)[section], ROOT[section]) == {}


def test_the_root_configs_own_keys_agree_with_the_schema():
    assert _disagreements(RootConfig, {k: v for k, v in ROOT.items() if not isinstance(v, dict)}) == {}


@pytest.mark.parametrize("group", sorted(TYPED_GROUPS))
def test_each_typed_groups_default_option_agrees_with_the_schema(group):
    written = yaml.safe_load((config_dir() / group / f"{DEFAULT_OPTIONS[group]}.yaml").read_text())
    written = {k: v for k, v in written.items() if k != "defaults"}
    assert _disagreements(TYPED_GROUPS[group], written) == {}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_a_launchers_yaml_and_its_dataclass_name_the_same_defaults(name):
    written = yaml.safe_load((config_dir() / "launcher" / f"{name}.yaml").read_text())["launcher"]
    assert written == dataclasses.asdict(LAUNCHERS[name].Config())


def test_a_trainer_variant_inherits_the_default_option():
    """configs/trainer/cpu.yaml restates none of default.yaml's values: it inherits them."""
    default = yaml.safe_load((config_dir() / "trainer" / "default.yaml").read_text())
    for path in (config_dir() / "trainer").glob("*.yaml"):
        if path.stem == "default":
            continue
        variant = yaml.safe_load(path.read_text())
        assert variant.get("defaults") == ["default", "_self_"], f"{path.name} does not inherit default.yaml"
        assert {k: v for k, v in variant.items() if k != "defaults" and default.get(k) == v} == {}, path.name
