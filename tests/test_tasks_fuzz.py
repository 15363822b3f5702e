"""Fuzzing the readers: every fixture format, truncated and byte-flipped at seeded random places.
The outcome is a prepared task or a one-line DataError naming the file; never another exception,
never a file written outside `--root`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import short_fixtures as F

from nevisbench.errors import DataError
from nevisbench.tasks.prepare import prepare_task

DAMAGES_PER_DATASET = 6
KEYS = sorted(F.BUILDERS)


def _damaged(data: bytes, rng: np.random.Generator, kind: str) -> bytes:
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    out = bytearray(data)
    for position in rng.integers(0, len(out), size=int(rng.integers(1, 9))):
        out[position] = int(rng.integers(0, 256))
    return bytes(out)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz-sources")
    for key in KEYS:
        F.build(key, base / key)
    return base


@pytest.mark.parametrize("key", KEYS)
def test_damaged_sources_fail_with_one_line_naming_the_file(pristine: Path, tmp_path: Path, key: str) -> None:
    rng = np.random.default_rng(sum(map(ord, key)))  # seeded per dataset
    files = sorted(p for p in (pristine / key).iterdir() if p.is_file())
    for attempt in range(DAMAGES_PER_DATASET):
        work = tmp_path / f"try{attempt}"
        src, root = work / "src", work / "root"
        shutil.copytree(pristine / key, src)
        victim = files[int(rng.integers(0, len(files)))]
        kind = "truncate" if attempt % 2 == 0 else "flip"
        (src / victim.name).write_bytes(_damaged(victim.read_bytes(), rng, kind))
        before = {p for p in work.rglob("*")}
        try:
            status = prepare_task(key, root, src, size=16, verify=False, extra_folders=())
            assert status["status"] == "ready"
        except DataError as exc:  # anything else fails the test with its traceback
            message = str(exc)
            assert "\n" not in message, (key, kind, victim.name, message)
            named = {victim.name, victim.name.split(".")[0], key}
            assert any(n in message for n in named), (key, kind, victim.name, message)
        created = {p for p in work.rglob("*")} - before
        assert all(root in p.parents or p == root for p in created), (key, sorted(map(str, created - {root})))
        shutil.rmtree(work)
