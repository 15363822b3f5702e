"""Shared fixtures: tiny run settings so real runs finish in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One torch thread per test process and per run it starts (xdist already runs one worker per core):
# runs compared exactly across processes (in-process vs subprocess, resumed vs whole) then use the
# same float reductions whatever the machine, and workers do not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The helper modules the tests import by name (plugins built to cheat or break the harness, fixtures)
HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))

# A real run, cut down: two steps per task, 16x16 images, deterministic CPU fp32, no progress bar.
TINY = [
    "train.max_steps=2",
    "data.image_size=16",
    "data.batch_size=16",
    "trainer=cpu",
    "trainer.progress_bar=false",
]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes outside its tmp dir or reaches the network through W&B or the torch hub."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env_extra: dict[str, str] | None = None,
            fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `nevisbench` command in a subprocess (`fault`: a crash point, see run/store/_faults.py)."""
    env = {k: v for k, v in os.environ.items() if k != "NEVISBENCH_FAULT"}
    env |= {"PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env_extra or {}), **({"NEVISBENCH_FAULT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "nevisbench", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def register_learner(monkeypatch: pytest.MonkeyPatch, name: str, target: str) -> None:
    """Make `target` ('module:Class', importable from tests/) the learner `name`, for this test only,
    as an installed plugin's entry point would."""
    from importlib.metadata import EntryPoint

    from nevisbench import registry

    found = dict(registry._entry_points())
    found[name] = EntryPoint(name=name, value=target, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: found)


# wall-clock fields, which differ between two runs of the same config
TIMING = {"wall_seconds", "seconds", "throughput", "peak_memory_bytes", "train_seconds", "run_name", "audit", "provenance"}


def without_timing(value):
    """A summary (or any JSON value) without its wall-clock fields, to compare two runs."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value
