"""Run configuration: YAML groups under `configs/` composed by Hydra, typed schemas, checks.

`schema.py` the typed dataclasses; `compose.py` composition and its one-line errors; `checks.py`
the value checks after composition; `search_space.py` the search group's names, space grammar
and checks; `resume.py` a resumed run's config and the refusal of changes.
"""

from __future__ import annotations

from omegaconf import DictConfig

from nevisbench.config.compose import GROUPS, compose_checked, config_dir, group_options, to_yaml
from nevisbench.config.resume import compose_resume

__all__ = ["GROUPS", "compose", "group_options", "config_dir", "to_yaml"]


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose the run config from the shipped YAML groups and command-line overrides.
    `resume=<run dir>` continues that run with its saved config (see `resume.compose_resume`)."""
    overrides = list(overrides or [])
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume:
        rest = [o for o in overrides if not o.startswith("resume=")]
        return compose_resume(resume[-1].partition("=")[2], rest)
    return compose_checked(overrides)
