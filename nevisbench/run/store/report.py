"""Terminal output: a table per finished task and a final summary (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from nevisbench.run.store.summary import Summary  # an annotation: summary.py imports torch (the meter's tally)

__all__ = ["format_flops", "task_table", "summary_table"]


def format_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _error(result: dict[str, Any]) -> str:
    return "[red]failed[/]" if result.get("status") == "failed" else f"{result['test_error']:.4f}"


def task_table(result: dict[str, Any], num_tasks: int) -> Table:
    title = f"Task {result['index'] + 1}/{num_tasks}: {result['task']} ({result['domain']}, {result['num_classes']} classes)"
    speed = result.get("throughput") or {}
    images, mfu = speed.get("train_images_per_second"), speed.get("mfu")
    columns = {
        "test error (chance)": f"{_error(result)} ({1 - 1 / result['num_classes']:.2f})",
        "steps": str(result["steps"]),
        "train FLOPs": format_flops(result["flops"]["train"]),
        "eval FLOPs": format_flops(result["flops"]["eval"]),
        "stream FLOPs": format_flops(result["cumulative_flops"]),
        "seconds": f"{result['wall_seconds']:.1f}",
        "img/s": f"{images:.0f}" if images else "-",
    }
    if mfu:
        columns["MFU"] = f"{mfu:.1%}"
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*columns.values())
    return table


def summary_table(summary: Summary) -> Table:
    table = Table(title=f"Summary: {summary.learner} on {summary.stream} ({summary.scenario})", title_justify="left")
    for column in ("task", "domain", "test error", "FLOPs"):
        table.add_column(column, justify="right" if column != "task" else "left")
    for task in summary.tasks:
        table.add_row(task["task"], task["domain"], _error(task), format_flops(task["flops"]["total"]))
    table.add_section()
    mean = summary.mean_test_error
    table.add_row("mean", "", "-" if mean is None else f"{mean:.4f}", format_flops(summary.total_flops))
    return table


def print_warning(console: Console, message: str) -> None:
    console.print(f"[bold yellow]WARNING:[/] {message}", soft_wrap=True)
