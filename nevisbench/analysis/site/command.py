"""`nevisbench report DIR... --out SITE/` (and the sweep's report, written beside comparison.*)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from nevisbench import layout
from nevisbench.analysis.runs import warn_stderr
from nevisbench.analysis.site import SiteSummary, build_site

__all__ = ["REPORT_DIR", "report_command", "share_command", "write_report"]

REPORT_DIR = layout.REPORT  # the sweep's report: <sweep dir>/report/index.html


def _said(console: Console, summary: SiteSummary) -> None:
    console.print(f"Wrote {escape(str(summary.index))} ({summary.runs} run(s), {summary.studies} study(ies), "
                  f"{summary.pages} pages in {summary.seconds:.1f} s); open it in a browser, no server needed",
                  soft_wrap=True, highlight=False)


def report_command(args: argparse.Namespace, console: Console) -> None:
    _said(console, build_site(args.dirs, args.out))


def share_command(args: argparse.Namespace, console: Console) -> None:
    """`nevisbench report` and `nevisbench wandb-workspace`: a study shown where people look."""
    if args.command == "report":
        report_command(args, console)
    else:
        from nevisbench.analysis.wandb_workspace import workspace_command

        workspace_command(args, console)


def write_report(sweep_dir: Path, console: Console) -> Path | None:
    """The sweep's report in `<sweep_dir>/report/`; a failure to write it is one warning (the
    comparison files stand), never the sweep's failure."""
    try:
        summary = build_site([sweep_dir], sweep_dir / REPORT_DIR, warn=lambda message: None)
    except Exception as exc:  # the comparison is written already: the report is an extra
        warn_stderr(f"the sweep's report was not written ({type(exc).__name__}: {exc})")
        return None
    _said(console, summary)
    return summary.index
