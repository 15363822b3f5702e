"""`TaskResult`: one finished task, as its line in `results.jsonl` (serialised here, and only here)."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from nevisbench.compute.hardware import peak_flops

__all__ = ["OPTIONAL_KEYS", "RESULT_KEYS", "TaskResult", "throughput", "peak_memory"]

OPTIONAL_KEYS = ("error", "budget", "search")  # on a results line only when they apply


@dataclass
class TaskResult:
    task: str
    index: int
    domain: str
    num_classes: int
    metric: str  # top1_error, or 1-mAP for multi-label tasks (test_error = 1 - mean average precision)
    test_error: float | None
    dev_test_error: float | None  # None where the task has no dev_test split
    selected: dict[str, Any]  # which model was scored: the last, or the best on dev (protocol=nevis)
    dev_error: float | None
    steps: int
    flops: dict[str, Any]
    cumulative_flops: float
    anytime: list[dict[str, float]]
    wall_seconds: float
    throughput: dict[str, Any]
    peak_memory_bytes: int
    data_on_device: bool
    num_train: int
    num_test: int
    status: str = "ok"  # ok | failed
    error: str | None = None
    budget: dict[str, Any] | None = None
    search: dict[str, Any] | None = None  # the task's hyperparameter search: its trials and the winner
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The results line: optional keys (`error`, `budget`, `search`) only when they apply."""
        line = asdict(self)
        extra = line.pop("extra")
        for key in OPTIONAL_KEYS:
            if line[key] is None:
                del line[key]
        return line | extra


RESULT_KEYS = frozenset(f.name for f in fields(TaskResult) if f.name not in (*OPTIONAL_KEYS, "extra"))
"""The keys every results line has."""


def throughput(tally: Any, images: int, device: torch.device, precision: str, configured_peak: float | None) -> dict[str, Any]:
    """Training images/s, executed FLOP/s and model FLOPs utilisation of one task."""
    seconds = tally.seconds_train
    achieved = tally.executed_train / seconds if seconds > 0 else None
    peak = peak_flops(device, precision, configured_peak)
    return {
        "train_images_per_second": images / seconds if seconds > 0 else None,
        "train_flops_per_second": achieved,  # executed FLOPs: what the hardware really ran
        "peak_flops": peak,
        "mfu": achieved / peak if (achieved and peak) else None,
    }


def peak_memory(device: torch.device) -> int:
    """Peak device memory of the task on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
