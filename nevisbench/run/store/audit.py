"""The time audit as a stream metric: the summary's `audit` section from the tasks' `audit` records
(`nevisbench.compute.audit` says what a task's audit is). `compare` shows its scalars as columns and
marks a run with a flagged task on the figure; W&B logs them as `audit/<scalar>`."""

from __future__ import annotations

from typing import Any

from nevisbench.run.store.metric import StreamMetric

__all__ = ["TimeAudit", "flagged_tasks"]


def flagged_tasks(tasks: list[dict[str, Any]]) -> dict[str, str]:
    """Task key -> the reason its audit flagged it (results lines of any run, old ones included)."""
    out = {}
    for line in tasks:
        audit = line.get("audit") if isinstance(line, dict) else None
        if isinstance(audit, dict) and audit.get("flagged"):
            out[str(line.get("task"))] = str(audit.get("reason") or "flagged")
    return out


class TimeAudit(StreamMetric):
    """`audit`: how many tasks were audited and flagged, which and why, and the largest and mean
    ratio of real to counted compute. Absent for runs whose lines carry no audit (older runs)."""

    name = "audit"
    scalars = ("flagged", "max_ratio")
    bounds = (0.0, 1e9)  # a count of tasks, and a ratio of seconds

    def compute(self, state: list[dict[str, Any]]) -> dict[str, Any] | None:
        audits = [(line["task"], line["audit"]) for line in state if isinstance(line.get("audit"), dict)]
        if not any("ratio" in audit or audit.get("flagged") for _, audit in audits):
            return None  # no task audited (a built-in learner under meter.time_audit=auto, a GPU run): no section
        ratios = [a["ratio"] for _, a in audits if isinstance(a.get("ratio"), (int, float))]
        flagged = flagged_tasks(state)
        skipped = sorted({a["skipped"] for _, a in audits if a.get("skipped")})
        return {
            "audited": len(ratios), "flagged": len(flagged), "flagged_tasks": flagged,
            "max_ratio": max(ratios) if ratios else None, "mean_ratio": sum(ratios) / len(ratios) if ratios else None,
            **({"skipped": skipped} if skipped else {}),
        }
