"""Plain types of the learner API: a learner's config base, what it may know about a task, and the
run-level settings it may read. No torch import, so configs validate without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LearnerConfig", "LearnerContext", "TaskInfo", "task_seed"]


@dataclass
class LearnerConfig:
    """Base of every learner's config dataclass. Subclasses add typed fields with defaults and may
    define `validate()` raising `nevisbench.ConfigError` for values out of range."""

    name: str = ""  # the learner's registered name: set it to its entry point's (no learner is a default here)


def task_seed(seed: int, index: int) -> int:
    """The seed of task `index` in a run seeded `seed`: the harness seeds each task's training with
    it, and its search sampler with `search.seed_with_run_seed=true` (`nevisbench.run.search.study.search_seed`)."""
    return seed + index


@dataclass(frozen=True)
class TaskInfo:
    """What a learner may know about a task."""

    key: str
    name: str
    index: int
    domain: str
    num_classes: int
    multi_label: bool = False


@dataclass(frozen=True)
class LearnerContext:
    """Run-level settings a learner may read (never the meter or the store)."""

    scenario: str  # transfer | continual
    seed: int
    image_size: int
    train: Any  # the `train` config section (optimizer, lr, ...)
    feature_dim: int | None  # width of the backbone's pooled features; None when the learner brings its own
    # read-only training examples of the current and earlier tasks (a StreamData; None outside a run)
    data: Any = None

    def learner_seed(self, index: int) -> int:
        """A seed for a learner's own random draws on task `index` (its own generator, apart from the
        harness's stream; `seed * 1000 + index`, distinct across tasks and nearby run seeds)."""
        return self.seed * 1000 + index
