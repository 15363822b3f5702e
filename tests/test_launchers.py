"""Launchers behind one interface (`nevisbench.sweep.launchers.Launcher`): the sweep reaches a
launcher only through `LAUNCHERS`, so a new one is its class, a registry line and its YAML."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from omegaconf import OmegaConf

from nevisbench.config import config_dir
from nevisbench.errors import ConfigError
from nevisbench.sweep import launchers
from nevisbench.sweep.jobs import Job
from nevisbench.sweep.local import LocalLauncherConfig


@pytest.mark.parametrize("name", sorted(launchers.LAUNCHERS))
def test_every_registered_launcher_has_the_interface_and_a_yaml(name):
    launcher = launchers.LAUNCHERS[name]
    assert launcher.name == name and dataclasses.is_dataclass(launcher.Config)
    assert all(callable(getattr(launcher, verb)) for verb in ("check", "check_devices", "launch", "states"))
    assert (config_dir() / "launcher" / f"{name}.yaml").is_file()


class Recording:
    """A launcher that records what the sweep asks of it."""

    name = "local"
    Config: type = LocalLauncherConfig

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def check(self, cfg: Any) -> None:
        self.calls.append(("check", cfg.jobs))

    def check_devices(self, jobs: list[Job], cfg: Any) -> None:
        self.calls.append(("check_devices", [j.index for j in jobs]))

    def launch(self, folder: Any, todo: list[Job], cfg: Any, console: Any) -> None:
        self.calls.append(("launch", [j.index for j in todo]))

    def states(self, folder: Any, jobs: list[Job], cfg: Any) -> tuple[dict[int, Any], str | None]:
        self.calls.append(("states", [j.index for j in jobs]))
        return {}, "the engine is away"


def test_the_sweep_configures_checks_launches_and_asks_states_through_the_registry(monkeypatch):
    fake = Recording()
    monkeypatch.setitem(launchers.LAUNCHERS, "local", fake)
    cfg = launchers.load_launcher({"launcher": "local", "launcher.jobs": "3"})
    jobs = [Job(index=i, name=f"j{i}", overrides=[]) for i in range(2)]
    launchers.launch(None, jobs, cfg, None)  # type: ignore[arg-type]
    folder = type("Folder", (), {"jobs": [*jobs, Job(index=2, name="j2", overrides=[], state="done")]})()
    assert launchers.job_states(folder, {"name": "local"}) == ({}, "the engine is away")  # type: ignore[arg-type]
    assert fake.calls == [("check", 3), ("check_devices", [0, 1]), ("launch", [0, 1]), ("check", None), ("states", [0, 1])]
    assert launchers.job_states(folder, {}) == ({}, None)  # type: ignore[arg-type]  # no saved launcher: nothing to ask


def test_a_launchers_own_check_refuses_a_bad_value_in_one_line():
    with pytest.raises(ConfigError, match=r"Invalid value for 'launcher.jobs': 0\. It must be >= 1 \(or null\)$"):
        launchers.load_launcher({"launcher": "local", "launcher.jobs": "0"})
    assert OmegaConf.to_container(launchers.load_launcher({"launcher": "slurm"}))["name"] == "slurm"
