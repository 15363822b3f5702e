"""Third-party learners: the example package through the CLI, and plugins that break the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, register_learner, run_cli

from nevisbench.config import compose
from nevisbench.errors import PluginError
from nevisbench.run.runner import run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nevisbench-example-learner"


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory):
    """The example package pip-installed into a folder of its own, put on the subprocesses' PYTHONPATH
    (the shared venv stays as it is: another worker's runs never see a package come and go)."""
    target = tmp_path_factory.mktemp("plugin")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
           str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_example_plugin_is_listed_and_runs_through_the_cli(example_installed, tmp_path):
    listed = json.loads(run_cli("list", "learners", "--json", env_extra=example_installed).stdout)
    assert {"name": "bitfit", "learner": "bitfit"}.items() <= next(r for r in listed if r["name"] == "bitfit").items()
    proc = run_cli("run", "learner=bitfit", "learner.train_batchnorm=false", *TINY, "stream.tasks=[faces]", f"out_dir={tmp_path}",
                   env_extra=example_installed)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["learner"] == "bitfit" and summary["learner_config"] == {"name": "bitfit", "train_batchnorm": False}
    bad = run_cli("run", "learner=bitfit", "learner.train_bn=false", env_extra=example_installed)
    assert bad.returncode == 2 and "Did you mean 'train_batchnorm'?" in bad.stderr


@pytest.mark.slow
def test_example_plugin_passes_its_own_conformance_suite(example_installed):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"), "-k", "conforms"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **example_installed},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("broken_plugins:NotALearner", "is not a subclass of nevisbench.Learner"),
        ("broken_plugins:Missing", "failed to import"),
        ("no_such_module:Thing", "failed to import"),
    ],
)
def test_a_plugin_that_is_not_a_learner_is_named_in_the_error(monkeypatch, target, message):
    register_learner(monkeypatch, "broken", target)
    with pytest.raises(PluginError) as info:
        compose(["learner=broken"])
    assert "Learner plugin 'broken'" in str(info.value) and message in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "message", "finished"),
    [
        ("broken_plugins:ReturnsAModule", "begin_task must return a LightningModule, got Linear", 0),
        ("broken_plugins:FailsOnSecondTask", "failed in begin_task(shapes): RuntimeError('out of ideas')", 1),
        ("broken_plugins:FailsInPrepare", "failed in prepare(): ValueError('cannot prune this')", None),
    ],
)
def test_a_plugin_that_breaks_at_run_time_keeps_finished_results(monkeypatch, tmp_path, tiny, target, message, finished):
    register_learner(monkeypatch, "broken", target)
    cfg = compose([*tiny, "learner=broken", "stream.tasks=[faces,shapes]", f"out_dir={tmp_path}"])
    with pytest.raises(PluginError) as info:
        run(cfg)
    assert "Learner 'broken'" in str(info.value) and message in str(info.value)
    (run_dir,) = tmp_path.iterdir()
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines() if results.exists() else []
    assert len(lines) == (finished or 0)
    assert not (run_dir / "summary.json").exists()
