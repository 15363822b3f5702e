"""Continual scores (`eval.revisit=true`, continual scenario): the accuracy matrix, average
accuracy, backward transfer and forgetting, from the `revisit` scores on the results lines
(measured by `nevisbench.run.revisit`). The summary's `continual` section."""

from __future__ import annotations

import math
from typing import Any

from nevisbench.run.store.metric import StreamMetric

__all__ = ["ContinualScores", "continual_scores"]


class ContinualScores(StreamMetric):
    """The `continual` section; measured by the runner's revisits, so nothing to measure here."""

    name = "continual"
    scalars = ("average_accuracy", "backward_transfer", "forgetting")

    def compute(self, state: list[dict[str, Any]]) -> dict[str, Any] | None:
        return continual_scores(state)


def continual_scores(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The accuracy matrix and its scores from the results lines of a revisiting run (None if it did
    not revisit). R[i][j] is the accuracy (1 - error; mAP on multi-label tasks) on task j's test
    split after training task i, for j <= i; later entries are null. Average accuracy is the mean
    of the last row; backward transfer the mean of R[T-1][j] - R[j][j] over j < T-1; forgetting
    the mean over j < T-1 of the best earlier accuracy on j minus the last (Chaudhry et al., 2018)."""
    if not any(line.get("revisit") for line in lines):
        return None
    keys = [line["task"] for line in lines]
    size = len(lines)
    matrix: list[list[float | None]] = [[None] * size for _ in range(size)]
    for i, line in enumerate(lines):
        revisit = line.get("revisit") or {}
        for j, error in enumerate(revisit.get("test_error") or []):
            matrix[i][j] = None if error is None else 1.0 - float(error)
        if line.get("test_error") is not None:
            matrix[i][i] = 1.0 - float(line["test_error"])
    last = matrix[-1]
    known = [a for a in last if a is not None]
    pairs = [(j, a, d) for j in range(size - 1) if (a := last[j]) is not None and (d := matrix[j][j]) is not None]
    forgetting = []
    for j in range(size - 1):
        earlier = [e for i in range(j, size - 1) if (e := matrix[i][j]) is not None]
        if earlier and (now := last[j]) is not None:
            forgetting.append(max(earlier) - now)
    return {
        "tasks": keys,
        "accuracy_matrix": matrix,
        "average_accuracy": sum(known) / len(known) if known else None,
        "backward_transfer": sum(a - d for _, a, d in pairs) / len(pairs) if pairs else None,
        "forgetting": sum(forgetting) / len(forgetting) if forgetting else None,
        "revisit_eval_flops": math.fsum(float((line.get("revisit") or {}).get("flops", 0.0)) for line in lines),
        # earlier tasks scored with the head the harness kept although the learner trained its own copy further
        **({"stale_heads": stale} if (stale := sorted({k for line in lines for k in (line.get("revisit") or {})
                                                          .get("stale_heads", [])})) else {}),
    }
