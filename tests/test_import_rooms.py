"""The rooms of `run/` import downward only (store < learner < task < search < the stream level),
and `analysis/` and `sweep/` reach `run/` only through its store."""

from __future__ import annotations

import ast
from pathlib import Path

import nevisbench

PACKAGE = Path(nevisbench.__file__).parent
ROOMS = ["store", "learner", "task", "search"]  # bottom to top; the stream level (run/*.py) is above them all


def _imports(path: Path) -> list[tuple[int, str]]:
    """The project modules `path` imports at run time (TYPE_CHECKING blocks left out), with the line."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for body in node.body for n in ast.walk(body)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nevisbench"):
            # `from nevisbench.run import runner` names a module; `from nevisbench.run.x import y` a name in one
            shallow = node.module.count(".") < 2
            out += [(node.lineno, f"{node.module}.{a.name}" if shallow else node.module) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("nevisbench")]
    return out


def _room(module: str) -> int | None:
    """The room's height (0 = store), 4 for the stream level, None outside `nevisbench.run`."""
    parts = module.split(".")
    if parts[:2] != ["nevisbench", "run"] or len(parts) < 3:
        return None
    return ROOMS.index(parts[2]) if parts[2] in ROOMS else len(ROOMS)


def _violations(folder: str, allowed: set[int] | None) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        here = _room(".".join(p for p in parts if p != "__init__")) if allowed is None else None
        for line, module in _imports(path):
            there = _room(module)
            if there is None:
                continue
            if (allowed is not None and there not in allowed) or (here is not None and there > here):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_the_rooms_of_run_import_only_downward():
    assert _violations("run", None) == []


def test_analysis_and_sweep_import_only_the_store():
    assert _violations("analysis", {0}) + _violations("sweep", {0}) + _violations("config", {0}) == []


def test_the_rule_sees_an_upward_arrow(tmp_path, monkeypatch):
    """The check itself can fail: a store module importing the task room is found."""
    (tmp_path / "run" / "store").mkdir(parents=True)
    (tmp_path / "run" / "store" / "bad.py").write_text("from nevisbench.run.task.train import TaskTrainer\n")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "bad.py").write_text("from nevisbench.run.runner import run\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "nevisbench")
    (tmp_path / "nevisbench").symlink_to(tmp_path)
    assert len(_violations("run", None)) == 1
    assert _violations("sweep", {0}) == ["nevisbench/sweep/bad.py:1 imports nevisbench.run.runner"]
