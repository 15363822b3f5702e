"""`nevisbench report DIR... --out SITE/`: a study as a static web site that opens from disk.

    SITE/index.html        per study: the compute-performance figure (stream and sub-streams), the
                           table of configurations, the anytime curves, the axis used (budget.x)
    SITE/learner/*.html    one page per configuration of a study: its curve, runs, per-task errors
    SITE/run/*.html        one page per run: per-task errors and compute, compute by kind and measure,
                           anytime curves, accuracy matrix, search trials, learner reports, time audit,
                           provenance and the config's difference from the study's other runs
    SITE/assets/plotly.min.js   plotly.js, copied from the `plotly` package: no network, no server

Runs are read by the one reader and labeller (`labels.collect`); studies are `labels.study_key`
(the rules `compare` uses): runs that are not comparable are never drawn or averaged together. A
run that cannot be read is one warning (on stderr and on the front page), the rest drawn.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nevisbench.analysis.labels import collect, study_key
from nevisbench.analysis.runs import Run, warn_stderr
from nevisbench.analysis.site.details import config_difference
from nevisbench.analysis.site.front import Study, front_page, learner_page
from nevisbench.analysis.site.html import ASSETS, PLOTLY_JS, Page
from nevisbench.analysis.site.run_page import run_page
from nevisbench.errors import ConfigError

__all__ = ["LEARNER_PAGES", "MARKER", "RUN_PAGES", "SiteSummary", "build_site", "plotly_js"]

MARKER = ".nevisbench-report"  # names a folder this command wrote: it may be written over
RUN_PAGES, LEARNER_PAGES = "run", "learner"  # not runs/: a name .gitignore files keep out of git


@dataclass
class SiteSummary:
    index: Path
    runs: int
    studies: int
    pages: int
    warnings: list[str]
    seconds: float


def plotly_js() -> Path:
    """plotly.min.js as the installed `plotly` package ships it."""
    try:
        import plotly
    except ImportError:
        raise ConfigError("nevisbench report needs the plotly package (pip install plotly), whose plotly.min.js "
                          "the site bundles") from None
    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise ConfigError(f"The plotly package at {path.parent.parent} has no {PLOTLY_JS}; reinstall it (pip install "
                          "--force-reinstall plotly)")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")[:80] or "run"


def _prepare(out: Path) -> None:
    """An empty or new folder, or a report written before (its pages replaced); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; pass a folder for the site (it is created if missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(f"--out '{out}' is a folder that holds other files, not a report this command wrote; "
                          "pass a new or empty folder")
    for sub in (RUN_PAGES, LEARNER_PAGES):
        shutil.rmtree(out / sub, ignore_errors=True)
    for sub in (RUN_PAGES, LEARNER_PAGES, ASSETS):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _studies(runs: list[Run]) -> list[Study]:
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(study_key(run), []).append(run)
    ordered = sorted(groups.values(), key=lambda g: (g[0].study, g[0].scenario != "transfer", g[0].scenario))
    return [Study(f"study-{i}", group) for i, group in enumerate(ordered)]


def build_site(paths: list[str | Path], out: str | Path, *, warn: Callable[[str], None] = warn_stderr) -> SiteSummary:
    """Read the runs under `paths` (run, sweep or runs folders) and write the site to `out`."""
    from nevisbench import __version__

    start = time.perf_counter()
    out = Path(out)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    source = plotly_js()
    runs = collect(paths, warn=note)
    _prepare(out)
    shutil.copyfile(source, out / ASSETS / PLOTLY_JS)
    studies = _studies(runs)
    run_names = {id(r): f"{RUN_PAGES}/{i:05d}-{_slug(r.run_dir.name)}.html" for i, r in enumerate(runs)}
    learner_names = {(s.anchor, label): f"{LEARNER_PAGES}/{s.anchor}-{j:03d}-{_slug(label)}.html"
                     for s in studies for j, label in enumerate(s.labels)}
    anchor = {id(r): s.anchor for s in studies for r in s.runs}

    def run_href(run: Run) -> str:
        return run_names[id(run)]

    def learner_href(run: Run) -> str:
        return learner_names[anchor[id(run)], run.label]

    pages: dict[str, Page] = {"index.html": front_page(studies, warnings, [str(p) for p in paths], run_href, learner_href,
                                                       __version__)}
    for study in studies:
        for label in study.labels:
            pages[learner_names[study.anchor, label]] = learner_page(study, label, run_href)
        _, differences = config_difference(study.runs)
        for run, difference in zip(study.runs, differences, strict=True):
            pages[run_href(run)] = run_page(run, difference, "../" + learner_href(run))
    for name, page in pages.items():
        (out / name).write_text(page.render(), encoding="utf-8")
    (out / MARKER).write_text(f"written by nevisbench {__version__} report\n", encoding="utf-8")
    return SiteSummary(out / "index.html", len(runs), len(studies), len(pages), warnings, time.perf_counter() - start)
