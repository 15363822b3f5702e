"""Calling a learner plugin: building it, and one wrapper for every hook it implements, so a plugin
that raises fails as one line naming the plugin and the hook, never as a traceback."""

from __future__ import annotations

import contextlib
from typing import Any
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf

from nevisbench.api.learner import Learner, LearnerContext
from nevisbench.errors import NevisbenchError, PluginError, TaskFailed
from nevisbench.registry import get_learner_class

__all__ = ["build_learner", "plugin_hook"]


@contextlib.contextmanager
def plugin_hook(learner_name: str, hook: str) -> Iterator[None]:
    """Turn anything a learner's `hook` raises into a one-line PluginError naming both."""
    try:
        yield
    except (NevisbenchError, TaskFailed, KeyboardInterrupt, SystemExit):  # the harness's own signals
        raise
    except Exception as exc:
        raise PluginError(f"Learner '{learner_name}' failed in {hook}: {exc!r}") from exc


def build_learner(cfg: DictConfig, feature_dim: int, cls: type | None = None, *, data: Any = None) -> Learner:
    """The configured learner, built from its config and the run-level context (`cls`: the class
    already loaded, e.g. in a search worker, which has no view of a test's registered plugins;
    `data`: the run's StreamData, the training examples the learner may draw)."""
    cls = cls or get_learner_class(cfg.learner.name)
    context = LearnerContext(scenario=cfg.scenario, seed=cfg.seed, image_size=cfg.data.image_size,
                             train=cfg.train, feature_dim=feature_dim, data=data)
    try:
        return cls(OmegaConf.to_object(cfg.learner), context)
    except Exception as exc:
        raise PluginError(f"Learner '{cfg.learner.name}' failed to initialise: {exc!r}") from exc
