"""Value checks on a composed config: ranges, closed sets, paths. Types are the schema's job.

Every failure is a one-line `ConfigError` naming the key, the bad value and what is valid.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nevisbench.config.schema import BACKBONES, PRECISIONS
from nevisbench.errors import ConfigError, choice_error

__all__ = ["check_values"]

# Closed sets of values (key -> valid values).
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


def check_values(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first value out of its valid range."""
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
