"""Terminal output: a table per finished task and a final summary (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["format_flops", "task_table", "summary_table"]


def format_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def task_table(result: dict[str, Any], num_tasks: int) -> Table:
    title = f"Task {result['index'] + 1}/{num_tasks}: {result['task']} ({result['domain']})"
    table = Table(title=title, title_justify="left", show_header=True)
    for column in ("classes", "test error", "chance", "steps", "train FLOPs", "eval FLOPs", "cumulative FLOPs", "seconds", "img/s", "MFU"):
        table.add_column(column, justify="right")
    speed = result.get("throughput") or {}
    images = speed.get("train_images_per_second")
    mfu = speed.get("mfu")
    table.add_row(
        str(result["num_classes"]),
        f"{result['test_error']:.4f}",
        f"{1 - 1 / result['num_classes']:.4f}",
        str(result["steps"]),
        format_flops(result["flops"]["train"]),
        format_flops(result["flops"]["eval"]),
        format_flops(result["cumulative_flops"]),
        f"{result['wall_seconds']:.1f}",
        f"{images:.0f}" if images else "-",
        f"{mfu:.1%}" if mfu else "-",
    )
    return table


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Summary: {summary['learner']} on {summary['stream']} ({summary['scenario']})", title_justify="left")
    for column in ("task", "domain", "test error", "FLOPs"):
        table.add_column(column, justify="right" if column != "task" else "left")
    for task in summary["tasks"]:
        table.add_row(task["task"], task["domain"], f"{task['test_error']:.4f}", format_flops(task["flops"]["total"]))
    table.add_section()
    table.add_row("mean", "", f"{summary['mean_test_error']:.4f}", format_flops(summary["total_flops"]))
    return table


def print_warning(console: Console, message: str) -> None:
    console.print(f"[bold yellow]WARNING:[/] {message}")
