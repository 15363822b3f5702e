"""The metric interface: what the stream loop is handed to score a run beyond its per-task errors.

A `StreamMetric` may measure something per task (`measure`, given a `TaskProbe` after the task is
scored and before the learner's `end_task`; the value goes on the task's results line under the
metric's `name`), and scores the run from its committed results lines, as dm_nevis's metrics do:
`init()` a state, `aggregate(state, line)` once per line in stream order, `compute(state)` the
summary's section under `name` (None: the section is left out). `scalars` names the section's
numbers that `compare` shows as columns and W&B logs (as `<name>/<scalar>`). The metrics a run
uses are `nevisbench.run.store.metrics.METRICS`; `run(..., metrics=...)` takes others.

The task metric (what one task's `test_error` is: top-1 error, or 1 - mAP on a multi-label task) is
named here too, once: `task_metric`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from torch import nn

    from nevisbench.api.types import TaskInfo
    from nevisbench.tasks.loader import TaskData

__all__ = ["MULTI_LABEL_METRIC", "SINGLE_LABEL_METRIC", "StreamMetric", "TaskProbe", "metric_scalars", "score_lines",
           "task_metric"]

SINGLE_LABEL_METRIC = "top1_error"
MULTI_LABEL_METRIC = "1-mAP"  # 1 - macro mean average precision, as Nevis scores Pascal VOC


def task_metric(multi_label: bool) -> str:
    """The name of the metric a task's errors are in (a results line's `metric`)."""
    return MULTI_LABEL_METRIC if multi_label else SINGLE_LABEL_METRIC


@dataclass
class TaskProbe:
    """What a metric may measure one task with, after the task is scored and before it ends.

    `start` is the backbone the task started from (continual: the one the earlier tasks left; None
    where there is none to name, e.g. a learner that brings its own backbone), `initial` the run's
    prepared backbone (what a transfer run starts every task from). Neither may be changed: clone
    before moving or training. `evaluate(model, split)` is the harness's evaluation of `model` (its
    `forward(x)` gives the task's logits) on the task's `split` ("train", "dev", "test"; in order,
    unaugmented): the error comes back, the compute is charged to the task as evaluation, and
    outputs that are not finite raise `TaskFailed` (the runner then records the measure as skipped)."""

    cfg: DictConfig
    task: TaskInfo
    data: TaskData
    start: nn.Module | None
    initial: nn.Module | None
    device: Any
    evaluate: Callable[[nn.Module, str], float]


class StreamMetric:
    """One metric of a run (see the module docstring). Subclasses set `name` and `scalars` and
    override what they need; the defaults measure nothing and compute nothing."""

    name: str = ""
    scalars: tuple[str, ...] = ()  # the section's numbers shown by `compare` and logged to W&B
    bounds: tuple[float, float] = (-1.0, 1.0)  # the range a reader accepts for them (accuracies and their differences)

    def enabled(self, cfg: DictConfig) -> bool:
        """Whether `measure` runs for this configuration (scoring always runs on what lines hold)."""
        return False

    def measure(self, probe: TaskProbe) -> Any:
        """A JSON value for the task's results line (under `name`), or None for nothing. The runner
        adds `flops` to a dict value: the evaluation FLOPs measuring charged to the task; a measure
        that met outputs that are not finite is recorded as {"skipped": why}."""
        return None

    def init(self) -> Any:
        return []

    def aggregate(self, state: Any, line: dict[str, Any]) -> Any:
        return [*state, line]

    def compute(self, state: Any) -> dict[str, Any] | None:
        return None


def score_lines(metrics: Iterable[StreamMetric], lines: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each metric's summary section from the run's results lines (in stream order), by name."""
    sections = {}
    for metric in metrics:
        state = metric.init()
        for line in lines:
            state = metric.aggregate(state, line)
        section = metric.compute(state)
        if section is not None:
            sections[metric.name] = section
    return sections


def metric_scalars(metrics: Iterable[StreamMetric]) -> list[tuple[str, str]]:
    """(section, scalar) of every number the metrics name, in order: `compare`'s extra columns and
    the W&B summary keys (`section/scalar`)."""
    return [(metric.name, scalar) for metric in metrics for scalar in metric.scalars]
