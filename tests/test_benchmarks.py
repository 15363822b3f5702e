"""Each benchmark script runs in its tiny mode, so none can rot. (No test asserts a time.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"
OWN_TESTS = {"gpu_suite.py"}  # tested below, reading what it writes
BENCHMARKS = sorted(p for p in ROOT.glob("*.py") if not p.name.startswith("_") and p.name not in OWN_TESTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_in_tiny_mode_and_prints_a_ratio_last(script):
    proc = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"ratio.*: \d+\.\d+$", last), last


@pytest.mark.slow
def test_gpu_suite_tiny_runs_every_section_and_writes_its_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "gpu_suite.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"ratio.*: \d+\.\d+$", proc.stdout.strip().splitlines()[-1])
    (md,) = tmp_path.glob("gpu_suite-*.md")
    report = json.loads(md.with_suffix(".json").read_text())
    text = md.read_text()
    assert report["device"].startswith("cpu") and report["pending"] is True
    assert "GPU figures: pending" in text and report["device"] in text
    assert report["compile"]["flops_identical"] is True  # counted the same compiled and eager
    compiled = report["compile"]["runs"]["compiled"]
    assert compiled["compiled_steps"] > 0 and compiled["compiled_steps"] + compiled["eager_steps"] == report["compile"]["steps"]
    groups = [row["learner"] for row in report["learners"]["rows"]]
    assert {"conv_prune grouped", "conv_prune grouped 2", "conv_prune grouped 4", "conv_prune grouped 8"} <= set(groups)
    assert len(report["short"]["tasks"]) == 3 and 0 < report["short"]["outside_share"] < 1
    for key in ("harness", "data"):
        assert report[key]["ratio"] > 0 and len(report[key]["pairs"]) == 1
