"""`nevisbench report` at study scale: N generated run folders (compare_scale's sweep: learners x
settings x budgets x seeds, 4 tasks each with anytime records, a full config.yaml, plus a time audit
on every task line), the site built in process (reader and labeller, then the pages), then the whole
command as a user runs it (`nevisbench report DIR --out SITE`, a fresh process, imports included).
Goal (issue 32): 1,000 runs in under 10 s. The last line is the 1,000-run command's time / 10 s.

    python benchmarks/report_scale.py                  # 100 and 1,000 runs
    python benchmarks/report_scale.py --sizes 10000    # --tiny: 20 runs (the test suite's check)
    python benchmarks/report_scale.py --browser        # also: the front page's load in headless Chromium
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_scale import generate

GOAL_SECONDS = 10.0
GOAL_RUNS = 1_000


def _with_audits(folder: Path) -> None:
    """A time audit on every task line (one run in 50 flagged), as the meter writes them."""
    for n, summary_path in enumerate(sorted((folder / "runs").glob("*/summary.json"))):
        summary = json.loads(summary_path.read_text())
        for task in summary["tasks"]:
            flagged = n % 50 == 0
            task["audit"] = {"ratio": 3.1 if flagged else 1.02, "flagged": flagged, "threshold": 1.5,
                             "reason": "unexplained CPU time" if flagged else None, "cpu_seconds": 10.0,
                             "explained_seconds": 3.2 if flagged else 9.8}
        summary_path.write_text(json.dumps(summary))


def in_process(folder: Path, out: Path) -> tuple[float, int]:
    from nevisbench.analysis.site import build_site

    start = time.perf_counter()
    summary = build_site([folder], out, warn=lambda message: None)
    return time.perf_counter() - start, summary.pages


def command(folder: Path, out: Path) -> tuple[float, float]:
    """The command's wall-clock and CPU seconds (on a shared machine the CPU time is the steadier figure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nevisbench", "report", str(folder), "--out", str(out)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or proc.stderr:
        raise SystemExit(f"report failed or warned: {proc.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def browser_load(index: Path) -> float:
    """Seconds from opening the front page in headless Chromium until every chart is drawn."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        start = time.perf_counter()
        driver.get(index.as_uri())  # returns once the page's scripts ran (Plotly.newPlot draws synchronously)
        drawn = driver.execute_script("return document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                                      "document.querySelectorAll('.chart').length === "
                                      "document.querySelectorAll('.js-plotly-plot').length")
        if not drawn:
            raise SystemExit("the front page's charts were not drawn")
        return time.perf_counter() - start
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated run counts")
    parser.add_argument("--tiny", action="store_true", help="20 runs only (the test suite's check)")
    parser.add_argument("--browser", action="store_true", help="time the front page in headless Chromium")
    args = parser.parse_args()
    sizes = [20] if args.tiny else [int(s) for s in args.sizes.split(",")]
    totals: dict[int, float] = {}
    print(f"{'runs':>6} {'pages':>6} {'in process':>11} {'command':>8} {'(cpu)':>8} {'site MB':>8} {'page load':>9}  goal")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = generate(Path(tmp) / "sweep", size)
            _with_audits(folder)
            built, pages = in_process(folder, Path(tmp) / "site-a")
            totals[size], cpu = command(folder, Path(tmp) / "site-b")
            megabytes = sum(p.stat().st_size for p in (Path(tmp) / "site-b").rglob("*") if p.is_file()) / 1e6
            load = f"{browser_load(Path(tmp) / 'site-b' / 'index.html'):.2f}s" if args.browser else "-"
        goal = f"< {GOAL_SECONDS:g} s" if size == GOAL_RUNS else "-"
        print(f"{size:>6} {pages:>6} {built:>10.2f}s {totals[size]:>7.2f}s {cpu:>7.2f}s {megabytes:>8.1f} {load:>9}  {goal}",
              flush=True)
    size = GOAL_RUNS if GOAL_RUNS in totals else sizes[-1]
    print(f"report time ratio ({size} runs, command / {GOAL_SECONDS:g} s goal): {totals[size] / GOAL_SECONDS:.3f}")


if __name__ == "__main__":
    main()
