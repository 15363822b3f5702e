"""The house: the wheel carries every module, config and catalogue; no import cycle between
modules; the harness package keeps few modules at its top, concerns in subpackages."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder in the repo -> the package it installs as (pyproject package-dir)
PACKAGES = {"nevisbench": "nevisbench", "learners": "nevisbench.learners", "tasks": "nevisbench.tasks",
            "configs": "nevisbench.configs"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every nevisbench module `path` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        out |= {n for n in names if n in known}
    return out


def test_no_import_cycle_between_modules():
    modules = _modules()
    # a module importing its own package (parent __init__) is how Python imports submodules, not a cycle
    graph = {m: {t for t in _imports(p, modules) if t != m and not m.startswith(t + ".")} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_harness_package_has_few_top_modules_and_subpackages_by_concern():
    top = sorted(p.name for p in (ROOT / "nevisbench").glob("*.py"))
    assert len(top) <= 8, top
    assert {"api", "run", "compute", "analysis", "config"} <= {p.name for p in (ROOT / "nevisbench").iterdir() if p.is_dir()}


@pytest.mark.slow
def test_the_wheel_carries_every_module_config_and_the_catalogue(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("nevisbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".cpp") and "__pycache__" not in path.parts:
                expected.add("/".join([*package.split("."), *path.relative_to(ROOT / folder).parts]))
    assert "nevisbench/tasks/nevis_short.yaml" in expected and "nevisbench/configs/protocol/nevis.yaml" in expected
    assert "nevisbench/compute/native_counter.cpp" in expected
    assert expected - names == set()
