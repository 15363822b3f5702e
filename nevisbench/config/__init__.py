"""Run configuration: YAML groups under `configs/`, typed schemas, `key=value` overrides."""

from nevisbench.config.compose import GROUPS, compose, config_dir, group_options, to_yaml

__all__ = ["GROUPS", "compose", "group_options", "config_dir", "to_yaml"]
