"""The run and sweep folders' names (`nevisbench/layout.py`) are spelled there only: no
other module of the harness writes one of them as a literal to join a path or read a variable."""

from __future__ import annotations

import ast
from pathlib import Path

import nevisbench
from nevisbench import layout

PACKAGE = Path(nevisbench.__file__).parent
NAMES = {layout.CONFIG, layout.RESULTS, layout.SUMMARY, layout.LOCK, layout.SWEEP, layout.JOBS, layout.SWEEP_RUNS,
         layout.SWEEP_LOGS, layout.DDP_RUN_DIR_ENV, layout.EXACT_RUN_DIR_ENV,
         *(f"{layout.COMPARISON}.{suffix}" for suffix in ("csv", "md", "png"))}
# (module, literal) pairs that name something else
OTHER_THINGS = {
    ("config/compose.py", "config.yaml"): "the config groups' root file (configs/config.yaml), not a run's",
    ("cli.py", "runs"): "the `plot` command's positional argument",
}


def _literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES]


def test_the_folders_names_are_spelled_only_in_the_layout_module():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where == "layout.py":
            continue
        found += [f"{where}:{line} spells {value!r}" for line, value in _literals(path) if (where, value) not in OTHER_THINGS]
    assert found == []


def test_the_layout_module_names_every_file_it_documents():
    documented = layout.__doc__ or ""
    assert all(name.split(".")[0] in documented for name in NAMES - {layout.DDP_RUN_DIR_ENV, layout.EXACT_RUN_DIR_ENV})
