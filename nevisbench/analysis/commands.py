"""`nevisbench compare DIR... [--csv FILE] [--markdown FILE] [--out FIG] [--x AXIS] [--baseline NAME]` and
`nevisbench plot DIR... [--out FIG] [--x AXIS] [--anytime]`: the same reader, labeller and figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nevisbench.analysis.compare import compare_rows, print_table, relate_to, render_table, to_csv, to_markdown
from nevisbench.analysis.figures import check_figure_path, plot_comparison
from nevisbench.analysis.labels import collect
from nevisbench.analysis.runs import AXES
from nevisbench.errors import ConfigError
from nevisbench.run.store.results import atomic_write_text

__all__ = ["compare_command", "plot_command", "plot_runs"]


def _check_axis(x: str | None) -> None:
    if x is not None and x not in AXES:
        raise ConfigError(f"Unknown compute axis '{x}'. Valid: {', '.join(AXES)}")


def compare_command(args: argparse.Namespace, console: Console) -> None:
    if args.out:
        try:
            check_figure_path(args.out)
        except ConfigError:
            raise ConfigError(f"Invalid --out '{args.out}': the figure file must end in one of .png, .pdf, .svg") from None
    _check_axis(args.x)
    runs = collect(args.dirs)
    rows = compare_rows(runs)
    if getattr(args, "baseline", None):
        relate_to(rows, args.baseline)
    print_table(console, render_table(rows))
    for path, text in ((args.csv, to_csv), (args.markdown, to_markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(path), text(rows))
            console.print(f"Wrote {path}")
    if args.out:
        console.print(f"Wrote {plot_comparison(runs, args.out, x=args.x)}")


def plot_runs(paths: list[str | Path], out: str | Path, *, x: str | None = None, anytime: bool = False) -> Path:
    """Read, label and draw the finished runs under `paths` into one figure at `out`."""
    check_figure_path(out)
    _check_axis(x)
    return plot_comparison(collect(paths), out, x=x, anytime=anytime)


def plot_command(args: argparse.Namespace, console: Console) -> None:
    console.print(f"Wrote {plot_runs(args.runs, args.out, x=args.x, anytime=args.anytime)}")
