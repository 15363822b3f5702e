"""Plain types of the learner API: a learner's config base, what it may know about a task, and the
run-level settings it may read. No torch import, so configs validate without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LearnerConfig", "LearnerContext", "TaskInfo"]


@dataclass
class LearnerConfig:
    """Base of every learner's config dataclass. Subclasses add typed fields with defaults and may
    define `validate()` raising `nevisbench.ConfigError` for values out of range."""

    name: str = "finetune"


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
    feature_dim: int  # width of the backbone's pooled features
    data: Any = None  # read-only task data for learners (issue 24): train_batch(task_index, batch_size, *, generator)
