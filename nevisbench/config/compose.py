"""Config composition: YAML groups under `configs/`, a typed schema, `key=value` overrides.

The schema (dataclasses below) holds the types; the YAML files under `configs/` hold the values.
Composition order: `config.yaml` -> one option per group (`learner=`, `stream=`, ...; a group file
may carry a `_global_` section that sets root keys, as the demo stream does for its small
backbone) -> dotted overrides (`train.max_steps=50`). Every mistake is a `ConfigError` that names
the key, the bad value and the valid choices, raised before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from nevisbench.errors import ConfigError, choice_error, did_you_mean

__all__ = ["GROUPS", "compose", "group_options", "config_dir", "to_yaml"]

GROUPS = ("learner", "stream", "trainer", "logger")

# Names of torchvision's ResNet family that the harness builds backbones from.
BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
)
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


@dataclass
class BackboneConfig:
    name: str = MISSING
    weights: str = MISSING  # imagenet | none | /local/file.pth | http(s)://url


@dataclass
class DataConfig:
    root: str = MISSING
    image_size: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    augment: bool = MISSING
    min_crop_scale: float = MISSING
    device_share: float = MISSING  # keep task data on the GPU when it fits in this share of free memory


@dataclass
class TrainConfig:
    max_steps: int = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    schedule: str = MISSING
    warmup_steps: int = MISSING
    label_smoothing: float = MISSING
    checkpoint_every_n_steps: int = MISSING  # mid-task checkpoints for resuming (0: off)
    fused: Optional[bool] = None  # fused optimizer kernels; null: on CUDA


@dataclass
class StreamConfig:
    name: str = MISSING
    tasks: Optional[list[str]] = None
    allow_missing: bool = False  # run the prepared tasks only, warn and record the missing ones


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    precision: Optional[str] = None  # None: bf16-mixed on CUDA, 32-true on CPU
    deterministic: bool = MISSING
    progress_bar: bool = MISSING
    log_every_n_steps: int = MISSING
    channels_last: Optional[bool] = None  # null: on CUDA
    benchmark: Optional[bool] = None  # cudnn.benchmark; null: on CUDA unless deterministic
    compile: bool = MISSING  # torch.compile the task module
    peak_flops: Optional[float] = None  # device peak FLOP/s for MFU; null: known GPUs only


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = MISSING
    entity: Optional[str] = None
    group: Optional[str] = None
    mode: Optional[str] = None  # online | offline | None: online when an API key is set


@dataclass
class BudgetConfig:
    flops_per_task: Optional[float] = None  # training FLOPs per task; null: train.max_steps decides
    measure: str = MISSING  # algorithmic | executed: the compute that budgets and curves count
    milestones: int = MISSING  # anytime dev evaluations per task, log-spaced in training compute
    first_milestone: float = MISSING  # the first milestone, as a fraction of the planned compute
    auc_min_flops: float = MISSING  # the fixed log-compute range of the AUC score
    auc_max_flops: float = MISSING


@dataclass
class RootConfig:
    learner: Any = MISSING  # typed by the chosen learner's own Config dataclass
    stream: StreamConfig = field(default_factory=StreamConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    scenario: str = MISSING
    seed: int = MISSING
    out_dir: str = MISSING
    run_name: Optional[str] = None
    on_failure: str = MISSING  # stop | skip: what the stream does after a task fails (NaN loss)
    resume: Optional[str] = None  # a run folder to continue


# Closed sets of values, checked after composition (key -> valid values).
_CHOICES: dict[str, tuple[str, ...]] = {
    "scenario": ("transfer", "continual"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("cosine", "constant"),
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "backbone.name": BACKBONES,
    "logger.mode": ("online", "offline", "disabled"),
    "budget.measure": ("algorithmic", "executed"),
    "on_failure": ("stop", "skip"),
}
# Lower bounds (key -> (minimum, inclusive)).
_MINIMUMS: dict[str, tuple[float, bool]] = {
    "seed": (0, True),
    "train.max_steps": (1, True),
    "train.lr": (0, False),
    "train.momentum": (0, True),
    "train.weight_decay": (0, True),
    "train.warmup_steps": (0, True),
    "train.label_smoothing": (0, True),
    "train.checkpoint_every_n_steps": (0, True),
    "data.image_size": (8, True),
    "data.batch_size": (1, True),
    "data.eval_batch_size": (1, True),
    "data.min_crop_scale": (0, False),
    "data.device_share": (0, True),
    "trainer.log_every_n_steps": (1, True),
    "budget.flops_per_task": (0, False),
    "budget.milestones": (0, True),
    "budget.first_milestone": (0, False),
    "budget.auc_min_flops": (0, False),
}


def config_dir() -> Path:
    """The folder holding the shipped YAML config groups (inside the installed package)."""
    return Path(str(resources.files("nevisbench.configs")))


def group_options(group: str) -> list[str]:
    """Options of a config group: its YAML files, plus (for learners) registered plugins."""
    options = {p.stem for p in (config_dir() / group).glob("*.yaml")}
    if group == "learner":
        from nevisbench.registry import learner_names

        options |= set(learner_names())
    return sorted(options)


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # a malformed shipped or user YAML file
        raise ConfigError(f"Cannot read config file {path}: {exc}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"Config file {path} must hold a mapping, got {type(cfg).__name__}")
    return cfg


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    groups: dict[str, str] = {}
    dotted: list[tuple[str, str]] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"Bad override '{item}': expected key=value, e.g. learner=finetune or train.max_steps=50"
            )
        if key in GROUPS:
            groups[key] = value.strip()
        else:
            dotted.append((key, value))
    return groups, dotted


def _group_file(group: str, option: str) -> Path | None:
    path = config_dir() / group / f"{option}.yaml"
    if path.is_file():
        return path
    if group == "learner" and option in group_options("learner"):
        return None  # a plugin learner without a YAML file: its Config defaults apply
    raise choice_error(group, option, group_options(group))


def _keys_of(node: Any) -> list[str]:
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


_NODE_KINDS = {
    "IntegerNode": "an integer",
    "FloatNode": "a number",
    "BooleanNode": "a boolean (true/false)",
    "StringNode": "a string",
    "EnumNode": "one of the allowed names",
}


def _explain(exc: OmegaConfBaseException, key: str, value: str, root: DictConfig) -> ConfigError:
    """Turn an omegaconf exception into one line naming the key, the value and the valid keys."""
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        parts = key.split(".")
        node: Any = root
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig) or part not in node:
                parent = ".".join(parts[:depth]) or "the root"
                valid = _keys_of(node)
                hint = did_you_mean(part, valid)
                return ConfigError(
                    f"Unknown config key '{key}': '{part}' is not a key of {parent}. "
                    f"Valid: {', '.join(valid)}.{hint}"
                )
            node = node[part]
        return ConfigError(f"Config key '{key}' cannot be set to '{value}': {exc.msg}")
    if isinstance(exc, ValidationError):
        parent, _, leaf = key.rpartition(".")
        node = (OmegaConf.select(root, parent) if parent else root)._get_node(leaf)
        kind = _NODE_KINDS.get(type(node).__name__, "value of the right type")
        return ConfigError(f"Invalid value for '{key}': '{value}' is not {kind}")
    return ConfigError(f"Cannot set '{key}={value}': {exc.msg if hasattr(exc, 'msg') else exc}")


def _set(root: DictConfig, key: str, value: str) -> None:
    if key in ("learner.name", "stream.name"):
        group = key.partition(".")[0]
        raise ConfigError(f"Set '{key}' by choosing the option: {group}={value} (see `nevisbench list {group}s`)")
    try:
        parsed = OmegaConf.from_dotlist([f"{key}={value}"])
        root.merge_with(parsed)
    except OmegaConfBaseException as exc:
        raise _explain(exc, key, value, root) from None


def _learner_schema(name: str) -> DictConfig:
    from nevisbench.registry import get_learner_class

    cls = get_learner_class(name)
    return OmegaConf.structured(cls.Config)


def _check_values(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"Config values missing: {', '.join(missing)}. Set them as key=value.")
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in choices:
            raise choice_error(f"value for '{key}':", value, choices)
    for key, (minimum, inclusive) in _MINIMUMS.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if value < minimum or (not inclusive and value == minimum):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ConfigError(f"Invalid value for '{key}': {value}; it must be {bound}")
    if cfg.budget.first_milestone > 1:
        raise ConfigError(f"Invalid value for 'budget.first_milestone': {cfg.budget.first_milestone}; it must be in (0, 1]")
    if cfg.budget.auc_max_flops <= cfg.budget.auc_min_flops:
        raise ConfigError(f"Invalid AUC range: budget.auc_max_flops={cfg.budget.auc_max_flops:g} must exceed "
                          f"budget.auc_min_flops={cfg.budget.auc_min_flops:g}")
    precision = cfg.trainer.precision
    if precision is not None and str(precision) not in PRECISIONS:
        raise choice_error("value for 'trainer.precision':", precision, PRECISIONS + ("null (auto)",))
    weights = cfg.backbone.weights
    if weights not in ("imagenet", "none") and not weights.startswith(("http://", "https://")):
        if not Path(os.path.expanduser(weights)).is_file():
            raise ConfigError(
                f"Invalid value for 'backbone.weights': '{weights}' is neither a file nor one of "
                "imagenet, none, http(s)://URL"
            )
    out_dir = Path(os.path.expanduser(cfg.out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"Invalid value for 'out_dir': '{cfg.out_dir}' is a file, not a directory")
    validate = getattr(OmegaConf.to_object(cfg.learner), "validate", None)
    if callable(validate):
        validate()  # learner-specific checks raise ConfigError themselves


# Keys a resumed run may change: they do not affect what is computed.
HARMLESS_ON_RESUME = ("logger.", "trainer.progress_bar", "trainer.log_every_n_steps", "out_dir", "resume", "choices.logger")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def compose_resume(run_dir: str, overrides: list[str]) -> DictConfig:
    """The saved config of `run_dir` with `overrides` applied; refuses changes that matter."""
    path = Path(os.path.expanduser(run_dir))
    saved_file = path / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"Cannot resume '{run_dir}': it is not a nevisbench run folder (no config.yaml)")
    saved = OmegaConf.to_container(_load_yaml(saved_file), resolve=True)
    choices = saved.pop("choices", None) or {}
    flat = _flatten(saved)
    base = [f"{group}={option}" for group, option in choices.items()]
    dotted = [f"{key}={_literal(value)}" for key, value in flat.items() if key not in ("learner.name", "stream.name")]
    cfg = compose([*base, *dotted, *overrides], _resuming=True)
    new = _flatten(OmegaConf.to_container(cfg, resolve=True))
    old = {**_flatten(saved), **{f"choices.{k}": v for k, v in choices.items()}}
    # keys the saved config lacks (added to nevisbench since) keep their defaults
    changed = sorted(k for k in old if new.get(k) != old[k] and not k.startswith(HARMLESS_ON_RESUME))
    if changed:
        detail = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        raise ConfigError(f"Cannot resume '{run_dir}' with a different config: {detail}. "
                          "Start a new run instead, or drop those overrides.")
    OmegaConf.set_struct(cfg, False)
    cfg.resume = str(path)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _literal(value: Any) -> str:
    """A value as an override string that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def compose(overrides: list[str] | None = None, *, _resuming: bool = False) -> DictConfig:
    """Compose the run config from the shipped YAML groups and command-line overrides.
    `resume=<run dir>` continues that run with its saved config (see `compose_resume`)."""
    overrides = list(overrides or [])
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume and not _resuming:
        rest = [o for o in overrides if not o.startswith("resume=")]
        return compose_resume(resume[-1].partition("=")[2], rest)
    groups, dotted = _parse_overrides(overrides)
    base = _load_yaml(config_dir() / "config.yaml")
    selection = dict(base.pop("defaults", {}))
    selection.update(groups)

    root = OmegaConf.structured(RootConfig)
    try:
        root.merge_with(base)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Shipped config.yaml does not match the schema: {exc}") from None

    learner_option = selection["learner"]
    learner_file = _group_file("learner", learner_option)
    learner_yaml = _load_yaml(learner_file) if learner_file else OmegaConf.create({"name": learner_option})
    learner_global = learner_yaml.pop("_global_", None)
    learner_cfg = _learner_schema(str(learner_yaml.get("name", learner_option)))
    OmegaConf.set_struct(learner_cfg, True)
    try:
        learner_cfg.merge_with(learner_yaml)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Config file {learner_file} does not match its learner's schema: {exc}") from None
    root.learner = learner_cfg
    globals_to_apply = [learner_global]

    for group in GROUPS[1:]:
        path = _group_file(group, selection[group])
        node = _load_yaml(path)
        globals_to_apply.append(node.pop("_global_", None))
        try:
            root[group].merge_with(node)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"Config file {path} does not match the schema: {exc}") from None
    for extra in globals_to_apply:
        if extra is not None:
            root.merge_with(extra)

    OmegaConf.set_struct(root, True)
    for key, value in dotted:
        _set(root, key, value)
    _check_values(root)
    return _with_choices(root, selection)


def _with_choices(root: DictConfig, selection: dict[str, str]) -> DictConfig:
    """Record which option of each group was picked (saved in config.yaml, used in run names)."""
    OmegaConf.set_struct(root, False)
    root.choices = selection
    OmegaConf.set_struct(root, True)
    return root


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
