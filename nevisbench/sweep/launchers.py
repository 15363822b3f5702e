"""Launchers: how a sweep's jobs run. Each is one class behind the small interface `Launcher`
(its `Config` dataclass of `launcher.*` keys, whose values are `configs/launcher/<name>.yaml`;
`check` its values, `check_devices` of the jobs before any starts, `launch` them until every one has
ended, report the engine's job `states` for `sweep status`), registered in `LAUNCHERS`:

- `local` (`local.py`): a thread pool of slots on this machine, one per GPU, else a share of the cores.
- `slurm` (`slurm.py`): submitit, the jobs as one SLURM array (requeue on preemption; `slurm_states.py`
  finds them again with sacct/squeue). `launcher.cluster=local` runs the same code through
  submitit's local executor (no SLURM needed).

A new launcher is one module with its class, a line in `LAUNCHERS` and its YAML.
"""

from __future__ import annotations

from typing import Any, Protocol

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from nevisbench.config import config_dir
from nevisbench.errors import ConfigError, choice_error, did_you_mean
from nevisbench.sweep.jobs import Job, SweepFolder
from nevisbench.sweep.local import LocalLauncher
from nevisbench.sweep.slurm import SlurmLauncher

__all__ = ["LAUNCHERS", "Launcher", "check_job_devices", "job_states", "launch", "load_launcher"]


class Launcher(Protocol):
    """How a sweep's jobs run (see the module docstring)."""

    name: str
    Config: type  # the dataclass of its `launcher.*` keys

    def check(self, cfg: Any) -> None:
        """Refuse values the types let through (one line naming the key)."""

    def check_devices(self, jobs: list[Job], cfg: Any) -> None:
        """Refuse, before anything starts, a job the launcher cannot give its devices (DDP)."""

    def launch(self, folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
        """Run `todo` until every job has ended (their records in the sweep folder say how)."""

    def states(self, folder: SweepFolder, jobs: list[Job], cfg: Any) -> tuple[dict[int, Any], str | None]:
        """The engine's view of `jobs` (index -> a job with `state` and `in_flight`), and a warning
        when the engine cannot tell (for `sweep status`); ({}, None) without an engine."""


LAUNCHERS: dict[str, Launcher] = {"local": LocalLauncher(), "slurm": SlurmLauncher()}


def load_launcher(sweep: dict[str, str], saved: dict[str, Any] | None = None) -> Any:
    """The launcher config: `configs/launcher/<name>.yaml` on its schema, then `launcher.*` overrides.
    `saved` (a resumed sweep's launcher) is the base when the command names no launcher."""
    name = sweep.get("launcher") or (saved or {}).get("name") or "local"
    if name not in LAUNCHERS:
        raise choice_error("launcher", name, LAUNCHERS)
    launcher = LAUNCHERS[name]
    node = OmegaConf.structured(launcher.Config)
    try:
        node = OmegaConf.merge(node, OmegaConf.load(config_dir() / "launcher" / f"{name}.yaml").launcher)
        if saved and saved.get("name") == name and "launcher" not in sweep:
            node = OmegaConf.merge(node, saved)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Launcher config '{name}': {' '.join(str(exc).split())}") from None
    valid = [str(k) for k in node.keys() if k != "name"]
    for key, value in sweep.items():
        if not key.startswith("launcher."):
            continue
        sub = key.partition(".")[2]
        if sub.split(".")[0] not in valid:
            raise ConfigError(f"Unknown config key '{key}': '{sub}' is not a key of launcher={name}. "
                              f"Valid: {', '.join(valid)}.{did_you_mean(sub, valid)}")
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([f"{sub}={value}"]))
        except OmegaConfBaseException:
            kind = getattr(launcher.Config, "__annotations__", {}).get(sub, "the right type")
            raise ConfigError(f"Invalid value for '{key}': '{value}' is not {kind}") from None
    launcher.check(node)
    return node


def check_job_devices(jobs: list[Job], cfg: Any) -> None:
    """Refuse, before anything starts, a multi-device (DDP) job the launcher cannot give its devices."""
    LAUNCHERS[cfg.name].check_devices(jobs, cfg)


def launch(folder: SweepFolder, todo: list[Job], cfg: Any, console: Console) -> None:
    """Run `todo` with the configured launcher until every job has ended."""
    if not todo:
        return
    check_job_devices(todo, cfg)
    LAUNCHERS[cfg.name].launch(folder, todo, cfg, console)


def job_states(folder: SweepFolder, saved: dict[str, Any]) -> tuple[dict[int, Any], str | None]:
    """The engine's view of the sweep's unfinished jobs, by the launcher it ran with (`saved`)."""
    if saved.get("name") not in LAUNCHERS:
        return {}, None
    cfg = load_launcher({}, saved=saved)
    return LAUNCHERS[cfg.name].states(folder, [j for j in folder.jobs if j.state != "done"], cfg)
