"""What ran a run, for its summary's `provenance`: nevisbench's version and git commit, Python, torch
and Lightning versions, and the device (the trainer's accelerator and what the process could see).
Read without starting a process: the commit from the checkout's .git files, when there is one."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "provenance"]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(start: Path | None = None) -> str | None:
    """The commit checked out where nevisbench is imported from (an editable install in a git
    checkout), read from .git/HEAD and its ref; None for an installed wheel or an unreadable repo."""
    here = (start or Path(__file__)).resolve()
    for folder in here.parents:
        git = folder / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            text = git.read_text(encoding="utf-8", errors="replace").strip()
            git = (folder / text.removeprefix("gitdir:").strip()).resolve()
        if git.is_dir():
            return _resolve_head(git)
    return None


def _resolve_head(git: Path) -> str | None:
    try:
        head = (git / "HEAD").read_text(encoding="ascii").strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.removeprefix("ref:").strip()
        common = git / "commondir"
        base = (git / common.read_text(encoding="ascii").strip()).resolve() if common.is_file() else git
        loose = base / ref
        if loose.is_file():
            return loose.read_text(encoding="ascii").strip() or None
        packed = base / "packed-refs"
        for line in packed.read_text(encoding="ascii").splitlines() if packed.is_file() else []:
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _device(accelerator: str | None) -> dict[str, Any]:
    device: dict[str, Any] = {"accelerator": accelerator, "cpu": platform.processor() or platform.machine()}
    try:
        import torch

        if accelerator != "cpu" and torch.cuda.is_available():
            device["cuda"] = torch.cuda.get_device_name(0)
            device["cuda_devices"] = torch.cuda.device_count()
    except Exception:  # no torch CUDA at all: the CPU is what ran
        pass
    return device


def provenance(accelerator: str | None = None, devices: Any = None) -> dict[str, Any]:
    """The versions and device of this process (`accelerator`, `devices`: the trainer config's)."""
    from nevisbench import __version__

    return {"nevisbench": __version__, "commit": git_commit(), "python": platform.python_version(),
            "torch": _version("torch"), "lightning": _version("lightning"), "platform": platform.platform(),
            "device": {**_device(accelerator), "devices": devices}}
