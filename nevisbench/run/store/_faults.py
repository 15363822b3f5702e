"""Crash points for fault-injection tests. With NEVISBENCH_FAULT=<point> set, the process kills
itself with SIGKILL when it reaches that point (no cleanup, like a pre-empted node). Points:
`after_task:<index>` (its results line committed), `step:<index>:<global step>` (mid-task, after
that step), `write:<file name>` (temporary file written and synced, before the rename). Under DDP
every rank dies there; `rank<N>@<point>` kills only the process of local rank N (a lost rank)."""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]


def crash_point(point: str) -> None:
    fault = os.environ.get("NEVISBENCH_FAULT", "")
    rank, _, only = fault.partition("@") if fault.startswith("rank") else ("", "", fault)
    if only == point and (not rank or rank == f"rank{os.environ.get('LOCAL_RANK', '0')}"):
        os.kill(os.getpid(), signal.SIGKILL)
