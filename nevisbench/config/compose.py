"""Composition of the run config with Hydra's compose API.

`configs/config.yaml` holds the defaults list: the typed schema (`schema.py`), its own values, then
one option per group (`learner=`, `stream=`, ...; a group file may be `# @package _global_`, as the
demo stream is, to set root keys such as its small backbone). Command-line overrides come last.
Composition runs twice inside one Hydra context: first to learn which learner the options pick,
then with `learner` typed by that learner's `Config` dataclass, so a learner's keys are checked
like every other key. A learner plugin without a YAML file is an option through a ConfigStore node.
Afterwards `checks.check_values` checks ranges. Hydra's and omegaconf's exceptions never escape:
each becomes a one-line `ConfigError` naming the key, the bad value and what is valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nevisbench.config.checks import check_values
from nevisbench.config.schema import GROUP_SCHEMAS, RootConfig, root_schema
from nevisbench.errors import ConfigError, NevisbenchError, choice_error, did_you_mean
from nevisbench.registry import get_learner_class, learner_names

__all__ = ["GROUPS", "compose_checked", "group_options", "config_dir", "to_yaml"]

CONFIG_MODULE = "nevisbench.configs"
SCHEMA_NODE = "nevisbench_schema"  # the name config.yaml's defaults list gives the schema
_LIST_HINT = {"learner": "See `nevisbench list learners`.", "stream": "See `nevisbench list streams`."}


def config_dir() -> Path:
    """The folder holding the shipped YAML config groups (inside the installed package)."""
    return Path(str(resources.files(CONFIG_MODULE)))


def _groups() -> tuple[str, ...]:
    """The groups of a run config: those config.yaml's defaults list names (`- group: option`).
    Folders it does not name (`launcher/`, `experiment/`: `nevisbench sweep` input) are no part of a run."""
    defaults = yaml.safe_load((config_dir() / "config.yaml").read_text(encoding="utf-8"))["defaults"]
    return tuple(str(next(iter(entry))) for entry in defaults if isinstance(entry, dict))


GROUPS = _groups()  # protocol, learner, stream, trainer, logger, search: config.yaml's order


def group_options(group: str) -> list[str]:
    """Options of a config group: its YAML files, plus (for learners) registered plugins."""
    options = {p.stem for p in (config_dir() / group).glob("*.yaml")}
    if group == "learner":
        options |= set(learner_names())
    return sorted(options)


@lru_cache(maxsize=1)
def _untyped_groups() -> tuple[str, ...]:
    """Groups without a schema whose options are not `# @package _global_`: sections of any keys."""
    def is_global(group: str) -> bool:
        return all(p.read_text(encoding="utf-8").startswith("# @package _global_")
                   for p in (config_dir() / group).glob("*.yaml"))

    return tuple(g for g in GROUPS if g != "learner" and g not in GROUP_SCHEMAS and not is_global(g))


def _root_keys() -> list[str]:
    return [f.name for f in fields(RootConfig)] + [g for g in _untyped_groups()]


@contextmanager
def _hydra() -> Iterator[ConfigStore]:
    """Hydra initialised on `nevisbench.configs` for the duration only: the ConfigStore and any
    Hydra instance of the host program are restored afterwards. The compose API changes no
    working directory, writes no output folder and sets up no logging."""
    store = ConfigStore.instance()
    ours = ("learner", f"{SCHEMA_NODE}.yaml")  # the entries this function adds to the ConfigStore
    saved = {key: dict(store.repo[key]) if isinstance(store.repo.get(key), dict) else store.repo.get(key)
             for key in ours}
    host = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        yaml_learners = {p.stem for p in (config_dir() / "learner").glob("*.yaml")}
        for name in set(learner_names()) - yaml_learners:  # plugins: their Config defaults apply
            store.store(group="learner", name=name, node={"name": name})
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3", job_name="nevisbench"):
            yield store
    finally:
        for key, value in saved.items():
            if value is None:
                store.repo.pop(key, None)
            else:
                store.repo[key] = value
        GlobalHydra.instance().clear()
        if host is not None:
            GlobalHydra.instance().initialize(host)


def _hydra_compose(store: ConfigStore, overrides: list[str], learner: type | None) -> tuple[DictConfig, dict[str, Any]]:
    """One Hydra composition; returns the config and the option chosen in each group."""
    store.store(name=SCHEMA_NODE, node=root_schema(learner=learner, untyped_groups=_untyped_groups()))
    cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    picked = cfg.hydra.runtime.choices
    choices = {group: picked[group] for group in GROUPS if group in picked}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def _one_line(exc: BaseException | None) -> str:
    """Hydra's and omegaconf's multi-line messages (with their cause) as one line."""
    skip = ("full_key:", "reference_type", "object_type", "See https://", "Available options", "Config search path")
    lines: list[str] = []
    while exc is not None and len(lines) < 4:
        for line in str(exc).splitlines():
            line = line.strip()
            if line.startswith(("Config search path", "Available options")):
                break
            if line and not line.startswith(skip) and not line.startswith("\t"):
                lines.append(line)
        exc = exc.__cause__
    return " ".join(dict.fromkeys(lines)) or "unknown error"


def _hydra_error(exc: Exception) -> ConfigError:
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return choice_error(group, option, group_options(group), fix=_LIST_HINT.get(group, ""))
    return ConfigError(f"Cannot compose the config: {_one_line(exc)}")


_NODE_KINDS = {
    "IntegerNode": "an integer",
    "FloatNode": "a number",
    "BooleanNode": "a boolean (true/false)",
    "StringNode": "a string",
    "EnumNode": "one of the allowed names",
}


def _keys_of(node: Any) -> list[str]:
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _node_kind(root: DictConfig, key: str) -> str:
    node: Any = root
    try:
        for part in key.split("."):
            node = node._get_node(part)
    except Exception:  # a path through a value: no node to describe
        return "a value of the right type"
    if isinstance(node, ListConfig):
        return "a list"
    if isinstance(node, DictConfig):
        return "a section (set its keys instead)"
    return _NODE_KINDS.get(type(node).__name__, "a value of the right type")


# Keys that were renamed -> what to write now (saved run folders are translated on resume).
RENAMED = {"budget.count_search": "budget.x=train+search (count_search=true) or budget.x=train (false)"}


def _explain(key: str, value: str, root: DictConfig) -> ConfigError:
    """One line naming the key, the value and the valid keys or the expected type."""
    parts = key.split(".")
    node: Any = root
    for depth, part in enumerate(parts):
        valid = _keys_of(node)
        if part not in valid:
            parent = ".".join(parts[:depth]) or "the root"
            if not isinstance(node, DictConfig):
                return ConfigError(f"Unknown config key '{key}': '{parent}' is a value, not a section")
            renamed = f" It was renamed: {RENAMED[key]}." if key in RENAMED else did_you_mean(part, valid)
            return ConfigError(f"Unknown config key '{key}': '{part}' is not a key of {parent}. "
                               f"Valid: {', '.join(valid)}.{renamed}")
        node = node._get_node(part)
    return ConfigError(f"Invalid value for '{key}': '{value}' is not {_node_kind(root, key)}")


def _failed_override(exc: Exception, parsed: list[Override]) -> Override | None:
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
    if not full_key:
        return None
    for override in parsed:
        key = override.key_or_group
        if key in GROUPS:
            continue
        if key == full_key or key.startswith(f"{full_key}.") or full_key.startswith(f"{key}."):
            return override
    return None


def _shown(text: str) -> str:
    """User input inside a one-line message: line breaks shown as escapes."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _bad(item: str, why: str) -> ConfigError:
    return ConfigError(f"Bad override '{_shown(item)}': {_shown(why)}")


def _parse(overrides: list[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise _bad(item, "expected key=value, e.g. learner=finetune or train.max_steps=50")
        try:
            (override,) = parser.parse_overrides([item])
        except Exception as exc:  # hydra's OverrideParseException, with a multi-line message
            raise _bad(item, f"{_one_line(exc).removeprefix(f'Error parsing override {item!r}').strip()} "
                             "(values with spaces or special characters need quotes: key='a value')") from None
        head = override.key_or_group.split(".")[0].split("/")[0]
        if head == "hydra":
            keys = _root_keys()
            raise ConfigError(f"Unknown config key '{override.key_or_group}': 'hydra' is not a key of the root. "
                              f"Valid: {', '.join(keys)}.")
        if override.is_sweep_override():
            raise _bad(item, "one value per key here; a list of values is a sweep (for a list value write key=[a,b])")
        if override.package is not None:
            raise _bad(item, "packages (@) cannot be changed")
        is_group = override.key_or_group in GROUPS
        if override.type == OverrideType.DEL or (override.type != OverrideType.CHANGE and not is_group):
            raise _bad(item, "keys cannot be added or deleted (+, ++, ~); set an existing key: key=value")
        if is_group:
            option = item.partition("=")[2]
            if option not in group_options(override.key_or_group):
                raise choice_error(override.key_or_group, option, group_options(override.key_or_group),
                                   fix=_LIST_HINT.get(override.key_or_group, ""))
        parsed.append(override)
    return parsed


_PICKED: dict[tuple[str, ...], str] = {}  # group options -> the learner they pick (memo of a composition)


def _picked_learner(store: ConfigStore, groups: tuple[str, ...]) -> str:
    """The registered learner name that these group options pick (a composition with `learner` untyped)."""
    if groups not in _PICKED:
        try:
            cfg, choices = _hydra_compose(store, list(groups), learner=None)
        except Exception as exc:
            raise _hydra_error(exc) from None
        name = cfg.learner.get("name") if isinstance(cfg.get("learner"), DictConfig) else None
        if name is None and choices.get("learner") in learner_names():  # a learner's own option: its file names it
            name = choices["learner"]
        if not isinstance(name, str):
            raise ConfigError(f"Config file learner/{choices.get('learner')}.yaml must set 'name' to a registered "
                              "learner (see `nevisbench list learners`)")
        _PICKED[groups] = name
    return _PICKED[groups]


def _check_user_override(item: str) -> None:
    key, _, value = item.partition("=")
    key = key.strip()
    if "${" in value:  # ${oc.env:...} would read the environment; a value is what the user typed
        raise ConfigError(f"Invalid override '{_shown(item)}': interpolations are not allowed in overrides")
    if key in ("learner.name", "stream.name"):
        group = key.partition(".")[0]
        value = item.partition("=")[2]
        raise ConfigError(f"Set '{key}' by choosing the option: {group}={value} (see `nevisbench list {group}s`)")


_SKELETONS: dict[tuple[str, ...], DictConfig] = {}  # group options -> their config without other overrides


def _skeleton(store: ConfigStore, groups: tuple[str, ...], learner: type) -> DictConfig:
    """The config these group options give, to explain a failed override against (read only)."""
    if groups not in _SKELETONS or OmegaConf.get_type(_SKELETONS[groups].learner) is not learner:
        _SKELETONS[groups] = _hydra_compose(store, list(groups), learner=learner)[0]
    return _SKELETONS[groups]


def _search_space_literal(item: str) -> str:
    """`search.space.<key>=loguniform(1e-4,1e-1)` is a string for the search's own parser
    (nevisbench.config.search_space), not a Hydra function call: quote it."""
    key, sep, value = item.partition("=")
    if sep and key.strip().startswith("search.space.") and value and value[0] not in "'\"":
        return f"{key}='{value}'" if "'" not in value else item
    return item


def compose_checked(overrides: list[str], *, saved: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose from the command-line `overrides` (checked as user input), after `saved` ones
    (a resumed run's own values, applied first)."""
    overrides = [_search_space_literal(item) for item in overrides]
    for item in overrides:
        _check_user_override(item)
    all_overrides = [*saved, *overrides]
    parsed = _parse(all_overrides)
    groups = [o.input_line for o in parsed if o.key_or_group in GROUPS and o.input_line is not None]
    with _hydra() as store:
        learner = get_learner_class(_picked_learner(store, tuple(groups)))
        try:
            cfg, choices = _hydra_compose(store, all_overrides, learner=learner.Config)
        except NevisbenchError:
            raise
        except Exception as exc:
            failed = _failed_override(exc, parsed)
            if failed is None:
                raise _hydra_error(exc) from None
            try:
                skeleton = _skeleton(store, tuple(groups), learner.Config)
            except Exception:
                raise _hydra_error(exc) from None
            raise _explain(failed.key_or_group, (failed.input_line or "").partition("=")[2], skeleton) from None
    with open_dict(cfg):
        cfg.choices = choices  # which option of each group (saved in config.yaml, used in run names)
    check_values(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (a real emitter: any string value reads back unchanged)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
