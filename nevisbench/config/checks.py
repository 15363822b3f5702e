"""Value checks on a composed config: ranges, closed sets, paths. Types are the schema's job.

Every failure is a one-line `ConfigError` naming the key, the bad value and what is valid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nevisbench.compute.hardware import world_size
from nevisbench.config.schema import PRECISIONS, X_CHOICES
from nevisbench.config.search_space import check_search
from nevisbench.errors import ConfigError, choice_error

__all__ = ["check_values"]

# Closed sets of values (key -> valid values).
_CHOICES: dict[str, tuple[str, ...]] = {
    "scenario": ("transfer", "continual"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("cosine", "constant"),
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "logger.mode": ("online", "offline", "disabled"),
    "budget.measure": ("algorithmic", "executed"),
    "budget.x": X_CHOICES,
    "on_failure": ("stop", "skip"),
    "protocol.selection": ("best_dev", "last"),
    "protocol.flip": ("all", "not_ocr"),
    "protocol.crop_fallback": ("center", "clamp"),
    "meter.count": ("auto", "every_step", "cached"),
    "meter.engine": ("auto", "native", "python"),
    "meter.time_audit": ("auto", "always", "off"),
    "protocol.batch_size": ("fixed", "nevis_rule"),
}
# Ranges (key -> (low, low inclusive, high, high inclusive)); None: unbounded on that side.
_RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "seed": (0, True, None, False),  # the upper bound depends on the stream: see _check_seed
    "train.max_steps": (1, True, None, False),
    "meter.audit_every": (1, True, None, False),
    "meter.unexplained_max": (1, True, None, False),
    "meter.unexplained_min_seconds": (0, True, None, False),
    "train.lr": (0, False, None, False),
    "train.momentum": (0, True, 1, False),
    "train.weight_decay": (0, True, None, False),
    "train.warmup_steps": (0, True, None, False),
    "train.warmup_epochs": (0, True, None, False),
    "train.final_lr": (0, True, None, False),
    "protocol.validate_every_n_steps": (0, True, None, False),
    "train.label_smoothing": (0, True, 1, False),
    "train.checkpoint_every_n_steps": (0, True, None, False),
    "data.image_size": (8, True, 1024, True),  # below 8 px a ResNet's stride-32 features vanish
    "data.batch_size": (1, True, None, False),
    "data.eval_batch_size": (1, True, None, False),
    "data.min_crop_scale": (0, False, 1, True),
    "data.device_share": (0, True, 1, True),
    "trainer.log_every_n_steps": (1, True, None, False),
    "trainer.peak_flops": (0, False, None, False),
    "budget.flops_per_task": (0, False, None, False),
    "budget.milestones": (0, True, None, False),
    "budget.first_milestone": (0, False, 1, True),
    "budget.auc_min_flops": (0, False, None, False),
    "budget.auc_max_flops": (0, False, None, False),
}
# String keys that must not be empty.
_NON_EMPTY = ("out_dir", "data.root", "backbone.weights", "logger.project")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range is [0, 2**32 - 1]


def _bound_text(low: float | None, low_in: bool, high: float | None, high_in: bool) -> str:
    if high is None:
        return f">= {low}" if low_in else f"> {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}{index}.")
    else:
        yield prefix[:-1], node


def _leaves(cfg: DictConfig) -> dict[str, Any]:
    """Every leaf value of `cfg`, resolved, by dotted key (a missing value reads '???')."""
    return dict(_walk(OmegaConf.to_container(cfg, resolve=True)))


def _check_every_value(leaves: dict[str, Any]) -> None:
    """No NaN or infinite number and no NUL character anywhere: none of them makes sense in a run."""
    for key, value in leaves.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"Invalid value for '{key}': {value}; it must be a finite number")
        if isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"Invalid value for '{key}': it contains a NUL character")


def _check_ranges(leaves: dict[str, Any]) -> None:
    for key, (low, low_in, high, high_in) in _RANGES.items():
        value = leaves.get(key)
        if value is None:
            continue
        below = low is not None and (value < low or (not low_in and value == low))
        above = high is not None and (value > high or (not high_in and value == high))
        if below or above:
            raise ConfigError(f"Invalid value for '{key}': {value}; it must be {_bound_text(low, low_in, high, high_in)}")
    final, lr = leaves.get("train.final_lr"), leaves.get("train.lr")
    if final is not None and lr is not None and final >= lr:
        raise ConfigError(f"Invalid value for 'train.final_lr': {final}; it must be below train.lr={lr} "
                          "(the cosine decays from train.lr down to it)")
    for key in _NON_EMPTY:
        if not leaves.get(key):
            raise ConfigError(f"Invalid value for '{key}': it must not be empty")


def _num_tasks(cfg: DictConfig) -> int:
    if cfg.stream.tasks is not None:
        return len(cfg.stream.tasks)
    # imported here: the task catalogue loads torch, and most configs never need it
    from nevisbench.tasks import get_stream

    return len(get_stream(cfg.stream.name).tasks)


def _check_seed(cfg: DictConfig) -> None:
    """Task i is seeded with seed + i, which must stay a valid seed."""
    if cfg.seed <= MAX_SEED - 10_000:  # far from the edge: no need to count the stream's tasks
        return
    highest = MAX_SEED - _num_tasks(cfg)
    if cfg.seed > highest:
        raise ConfigError(f"Invalid value for 'seed': {cfg.seed}; it must be in [0, {highest}] "
                          f"(task i is seeded with seed + i, at most 2**32 - 1)")


def _check_run_name(run_name: str | None) -> None:
    """A run name is one path component: the run folder is <out_dir>/<run_name>, never elsewhere."""
    if run_name is None:
        return
    if run_name in ("", ".", "..") or any(c in run_name for c in "/\\\x00") or len(run_name.encode()) > 255:
        raise ConfigError(f"Invalid value for 'run_name': {run_name!r}; it must be one folder name (not empty, "
                          "not . or .., no / or \\, at most 255 bytes), or null for <timestamp>-<learner>")


def _check_devices(devices: Any) -> None:
    ok = (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1)
          or (isinstance(devices, list) and devices and len(set(devices)) == len(devices)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)))
    if not ok:
        raise ConfigError(f"Invalid value for 'trainer.devices': {devices!r}; it must be a count >= 1, a list of "
                          "distinct device indices such as [0,1], or auto")


def _check_multi_device(cfg: DictConfig) -> None:
    """Under DDP `data.batch_size` is the global batch, split evenly over the processes (whether the
    devices exist is checked when the run starts: a sweep composes its jobs on a login node)."""
    world = world_size(cfg.trainer)
    if world > 1 and cfg.data.batch_size % world:
        raise ConfigError(f"Invalid value for 'data.batch_size': {cfg.data.batch_size} is the global batch and must "
                          f"split evenly over trainer.devices={world} processes (use a multiple of {world})")


def _path_kind(text: str) -> str:
    """'file', 'dir', 'missing' or 'bad' (a path the system refuses, e.g. a name too long)."""
    try:
        path = Path(os.path.expanduser(text))
        return "dir" if path.is_dir() else "file" if path.exists() else "missing"
    except (OSError, ValueError):
        return "bad"


def _check_closed_sets_and_ranges(cfg: DictConfig, leaves: dict[str, Any] | None = None) -> None:
    """The closed sets and ranges, on `cfg`'s `leaves` (computed when not given)."""
    leaves = _leaves(cfg) if leaves is None else leaves
    for key, choices in _CHOICES.items():
        value = leaves.get(key)
        if value is not None and value not in choices:
            raise choice_error(f"value for '{key}':", value, choices)
    _check_ranges(leaves)


def _check_search(cfg: DictConfig) -> None:
    """The search group: its space parses, names existing train.*/learner.* keys, and every value
    it can draw fits its key (see nevisbench.config.search_space)."""
    if cfg.get("search") is None:
        return
    check_search(cfg, _check_closed_sets_and_ranges)


def check_values(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first value out of its valid range. The config is walked once
    (a sweep checks every job's config: 1,000 jobs in seconds)."""
    try:
        leaves = _leaves(cfg)
        missing = sorted(key for key, value in leaves.items() if value == "???")
    except Exception:  # an interpolation that cannot resolve, e.g. one to a missing value: name those
        missing = sorted(OmegaConf.missing_keys(cfg))
        if not missing:
            raise
    if missing:
        raise ConfigError(f"Config values missing: {', '.join(missing)}. Set them as key=value.")
    _check_every_value(leaves)
    _check_closed_sets_and_ranges(cfg, leaves)
    _check_seed(cfg)
    _check_run_name(cfg.run_name)
    _check_devices(cast(dict, OmegaConf.to_container(cfg.trainer, resolve=True))["devices"])
    _check_multi_device(cfg)
    _check_search(cfg)
    if cfg.eval.revisit and cfg.scenario != "continual":
        raise ConfigError(f"eval.revisit=true needs scenario=continual, got scenario={cfg.scenario}: in transfer every "
                          "task starts from the initial backbone, so nothing learned earlier can be forgotten")
    if cfg.stream.tasks is not None and len(cfg.stream.tasks) == 0:
        raise ConfigError("Invalid value for 'stream.tasks': []; list at least one task, or null for the whole stream")
    if cfg.budget.auc_max_flops <= cfg.budget.auc_min_flops:
        raise ConfigError(f"Invalid AUC range: budget.auc_max_flops={cfg.budget.auc_max_flops:g} must exceed "
                          f"budget.auc_min_flops={cfg.budget.auc_min_flops:g}")
    precision = cfg.trainer.precision
    if precision is not None and str(precision) not in PRECISIONS:
        raise choice_error("value for 'trainer.precision':", precision, PRECISIONS + ("null (auto)",))
    weights = cfg.backbone.weights
    if weights not in ("imagenet", "none") and not weights.startswith(("http://", "https://")):
        if _path_kind(weights) != "file":
            raise ConfigError(
                f"Invalid value for 'backbone.weights': {weights!r} is neither a file nor one of "
                "imagenet, none, http(s)://URL"
            )
    from nevisbench.backbones.checks import check_backbone
    from nevisbench.registry import get_learner_class

    check_backbone(cfg, get_learner_class(cfg.learner.name))  # the registry's names; the learner's families
    out_dir = _path_kind(cfg.out_dir)
    if out_dir == "file":
        raise ConfigError(f"Invalid value for 'out_dir': '{cfg.out_dir}' is a file, not a directory")
    if out_dir == "bad":
        raise ConfigError(f"Invalid value for 'out_dir': {cfg.out_dir!r} is not a usable path")
    learner = OmegaConf.to_object(cfg.learner)
    validate = getattr(learner, "validate", None)
    if callable(validate):
        try:
            validate()  # learner-specific checks raise ConfigError themselves
        except ConfigError:
            raise
        except Exception as exc:  # a plugin's check that trips over an odd value
            raise ConfigError(f"Invalid learner config for '{cfg.learner.name}': {exc!r}") from None
