"""Many run configs at once (a sweep's jobs), each exactly what `compose_checked` gives, fast.

Hydra composes a config in two steps: the defaults list (one option per group) merged into a base,
then each value override applied to it in order (`ConfigLoaderImpl._apply_overrides_to_config`).
Jobs that pick the same group options share the first step, so it runs once per distinct choice
of options; the second step, Hydra's own, runs per job on a copy of that base, then the same
value checks. Any failure on this path is handed to `compose_checked` itself, whose error (or
config) is the answer: the messages are the ones `nevisbench run` prints.
"""

from __future__ import annotations

import pickle
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import DictConfig, open_dict

from nevisbench.config.checks import check_values
from nevisbench.config.compose import (
    GROUPS,
    _check_user_override,
    _hydra,
    _hydra_compose,
    _parse,
    _picked_learner,
    _search_space_literal,
    compose_checked,
)

__all__ = ["ConfigBatch"]


class ConfigBatch:
    """`compose(overrides)` == `compose_checked(overrides)`, one Hydra composition per choice of
    group options instead of one per call."""

    def __init__(self) -> None:
        self._bases: dict[tuple[str, ...], tuple[bytes, dict[str, Any]] | None] = {}
        self._parsed: dict[str, Any] = {}  # override -> Hydra's parse of it (the same values recur across jobs)

    def _base(self, groups: tuple[str, ...]) -> tuple[bytes, dict[str, Any]] | None:
        """The config the group options give before any value override (None: it cannot be made)."""
        if groups not in self._bases:
            from nevisbench.registry import get_learner_class

            try:
                with _hydra() as store:
                    learner = get_learner_class(_picked_learner(store, groups))
                    cfg, choices = _hydra_compose(store, list(groups), learner=learner.Config)
            except Exception:
                self._bases[groups] = None
                return None
            with open_dict(cfg):  # the part of Hydra's node that applying overrides reads (nevisbench sets no env_copy)
                cfg.hydra = {"job": {"env_copy": [], "env_set": {}}}
            self._bases[groups] = pickle.dumps(cfg), choices  # unpickled per job: a fresh copy, faster than deepcopy
        return self._bases[groups]

    def compose(self, overrides: list[str]) -> DictConfig:
        try:
            cfg = self._fast(overrides)
        except Exception:
            cfg = None
        return cfg if cfg is not None else compose_checked(overrides)

    def _fast(self, overrides: list[str]) -> DictConfig | None:
        parsed = []
        for item in (_search_space_literal(item) for item in overrides):
            if item not in self._parsed:
                _check_user_override(item)
                (self._parsed[item],) = _parse([item])  # _parse checks each override on its own
            parsed.append(self._parsed[item])
        groups = tuple(o.input_line for o in parsed if o.key_or_group in GROUPS)
        base = self._base(groups)
        if base is None:
            return None
        cfg = pickle.loads(base[0])
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.key_or_group not in GROUPS], cfg)
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.choices = dict(base[1])
        check_values(cfg)
        return cfg
