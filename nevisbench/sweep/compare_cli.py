"""`nevisbench compare DIR... [--csv FILE] [--markdown FILE] [--out FIG]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nevisbench.errors import ConfigError
from nevisbench.run.results import atomic_write_text
from nevisbench.sweep.compare import collect, compare_rows, plot_comparison, render_table, to_csv, to_markdown

__all__ = ["compare_command"]

_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def compare_command(args: argparse.Namespace, console: Console) -> None:
    if args.out and Path(args.out).suffix.lower() not in _FIGURE_SUFFIXES:
        raise ConfigError(f"Invalid --out '{args.out}': the figure file must end in one of {', '.join(_FIGURE_SUFFIXES)}")
    points = collect(args.dirs)
    rows = compare_rows(points)
    console.print(render_table(rows))
    for path, text in ((args.csv, to_csv), (args.markdown, to_markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(path), text(rows))
            console.print(f"Wrote {path}")
    if args.out:
        console.print(f"Wrote {plot_comparison(points, args.out)}")
