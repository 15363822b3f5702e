"""The report in a real browser (second tier): a tiny real sweep writes its report beside
comparison.*, and headless Chromium opens it from disk: no console errors, the figure renders one
trace per configuration, hovering a seed's dot names its run, the links to run pages resolve, and a
screenshot is kept as the test's artifact. Skips, saying why, where Chromium or its driver is missing
(`.ci/run` installs Debian's chromium and chromium-driver)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import TINY, run_cli

CHROMEDRIVER = "/usr/bin/chromedriver"
_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=1300,1000")


def _browser(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None or not Path(CHROMEDRIVER).is_file():
        pytest.skip(f"headless Chromium is not installed (chromium: {binary or 'missing'}, {CHROMEDRIVER}: "
                    f"{'present' if Path(CHROMEDRIVER).is_file() else 'missing'}); apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (*_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(driver, script: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.slow
def test_sweep_report_opens_in_headless_chromium(tmp_path: Path):
    driver = _browser(tmp_path / "chromium-profile")  # skips before any training when there is no browser
    try:
        sweep = tmp_path / "sweep"
        proc = run_cli("sweep", "learner=finetune,conv_prune", "seed=0,1", "stream.tasks=[digits,shapes]", *TINY,
                       f"sweep_dir={sweep}", "launcher.jobs=2", timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        index = sweep / "report" / "index.html"
        assert index.is_file() and (sweep / "comparison.csv").is_file(), proc.stdout[-2000:]
        driver.get(index.as_uri())
        _wait(driver, "return document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        assert _errors(driver) == []
        figure = "document.getElementById('fig-0')"
        means = driver.execute_script(f"return {figure}.data.filter(t => t.meta.role === 'mean').map(t => t.name)")
        assert sorted(means) == ["conv_prune", "finetune"]
        drawn = driver.execute_script(f"return {figure}.querySelectorAll('.scatterlayer .trace').length")
        assert drawn == driver.execute_script(f"return {figure}.data.filter(t => t.type === 'scatter').length")
        hover = driver.execute_script(f"""
            const gd = {figure}; const i = gd.data.findIndex(t => t.meta.role === 'seeds');
            Plotly.Fx.hover(gd, [{{curveNumber: i, pointNumber: 0}}]);
            const label = gd.querySelector('.hoverlayer'); return label ? label.textContent : '';""")
        assert "run: 00" in hover and "seed: " in hover, hover
        links = driver.execute_script("return Array.from(document.querySelectorAll('a[href^=\"learner/\"]')).map(a => a.href)")
        assert links
        driver.get(links[0])
        runs = driver.execute_script("return Array.from(document.querySelectorAll('a[href*=\"/run/\"]')).map(a => a.href)")
        assert len(runs) == 2
        driver.get(runs[0])
        _wait(driver, "return document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        assert "Compute by kind and measure" in driver.page_source and "Provenance" in driver.page_source
        assert "lightning" in driver.page_source and "not recorded" not in driver.page_source  # the run's provenance
        assert _errors(driver) == []
        driver.get(index.as_uri())
        _wait(driver, "return document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot of the report: {shot}")
    finally:
        driver.quit()
