"""Run configuration: YAML groups under `configs/` composed by Hydra, typed schemas, checks.

`schema.py` the typed dataclasses; `compose.py` composition and its one-line errors; `checks.py`
the value checks after composition; `resume.py` a resumed run's config and the refusal of changes.
"""

from nevisbench.config.compose import GROUPS, compose, config_dir, group_options, to_yaml

__all__ = ["GROUPS", "compose", "group_options", "config_dir", "to_yaml"]
