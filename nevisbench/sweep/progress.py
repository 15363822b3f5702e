"""Sweep progress: one live line per job (rich), and the jobs table of `nevisbench sweep status`.
Job names, errors and log lines are text, not rich markup: escaped before rich prints them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from nevisbench.sweep.jobs import Job, SweepFolder, last_output, run_in_use

__all__ = ["watch", "jobs_table", "STATE_STYLE"]

STATE_STYLE = {"pending": "dim", "running": "cyan", "done": "green", "failed": "red", "stale": "yellow"}


def _elapsed(job: Job) -> str:
    if job.started is None:
        return ""
    seconds = (job.finished or time.time()) - job.started
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def shown_state(folder: SweepFolder, job: Job, live: bool, engine: Any = None) -> str:
    """A `running` job whose run folder nobody holds, seen from outside the sweep, is `stale`: the
    sweep was stopped; the same command (or `sweep resume=DIR`) continues it. A job its engine
    (submitit) still has queued or running is never stale: the run may hold its lock on another node."""
    if engine is not None and engine.in_flight:
        return job.state
    if not live and job.state == "running" and not run_in_use(folder.run_dir(job)):
        return "stale"
    return job.state


def jobs_table(folder: SweepFolder, *, live: bool = False, detail: bool = True,
               engines: dict[int, Any] | None = None) -> Table:
    """`engines`: job index -> its submitit job found again (`launchers.engine_states`), shown in
    an `engine` column (the engine's state and job id)."""
    counts = folder.counts()
    title = f"sweep {folder.name}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    table = Table(title=title, title_justify="left")
    columns = ["#", "job", "state", "tries", "time", "run folder" if not live else "last output"]
    if engines:
        columns.insert(3, "engine")
    for column in columns:
        table.add_column(column, overflow="fold")
    for job in folder.jobs:
        engine = (engines or {}).get(job.index)
        state = shown_state(folder, job, live, engine)
        if live:
            note = last_output(folder, job) if state == "running" else (job.error or "")
        else:
            note = str(folder.run_dir(job).relative_to(folder.path)) + (f"  {job.error}" if job.error and detail else "")
        cells = [str(job.index), escape(job.name), f"[{STATE_STYLE[state]}]{state}[/]", str(job.attempts),
                 _elapsed(job), escape(note[:100])]
        if engines:
            cells.insert(3, f"{engine.state} {job.job_id}" if engine is not None else "")
        table.add_row(*cells)
    return table


def watch(folder: SweepFolder, finished: Callable[[], bool], console: Console, *, every_s: float = 1.0) -> None:
    """Show the jobs until `finished()`: a live table on a terminal, else one line per state change."""
    if console.is_terminal:
        with Live(jobs_table(folder, live=True), console=console, refresh_per_second=2, transient=False) as live:
            while not finished():
                time.sleep(every_s)
                folder.reload()
                live.update(jobs_table(folder, live=True))
            folder.reload()
            live.update(jobs_table(folder, live=True))
        return
    seen: dict[int, Any] = {}
    while True:
        done = finished()
        folder.reload()
        for job in folder.jobs:
            key = (job.state, job.attempts)
            if seen.get(job.index) != key:
                seen[job.index] = key
                if job.state != "pending" or job.attempts:
                    extra = f" ({job.error})" if job.state == "failed" and job.error else ""
                    console.print(f"[{job.index:03d}] {job.name}: {job.state} (try {job.attempts}){extra}",
                                  highlight=False, soft_wrap=True, markup=False)
        if done:
            return
        time.sleep(every_s)
