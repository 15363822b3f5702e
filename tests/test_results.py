"""The results store: atomic writes, torn-line detection."""

from __future__ import annotations

import os

import pytest

from nevisbench.errors import DataError
from nevisbench.run.store.results import ResultsStore, atomic_write_text


def test_append_and_read_back(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"task": "a", "index": 0})
    store.append({"task": "b", "index": 1})
    assert [r["task"] for r in store.read_results()] == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_written_files_respect_the_umask(tmp_path):
    atomic_write_text(tmp_path / "f", "x")
    assert oct((tmp_path / "f").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("text", "message"), [
    ('{"task": "a"}\n{"task": "b', "line 2 is torn"),
    ('{"task": "a"}\n{"task": "b"}', "the last line is incomplete"),
])
def test_torn_results_are_reported(tmp_path, text, message):
    (tmp_path / "results.jsonl").write_text(text)
    with pytest.raises(DataError, match=message):
        ResultsStore(tmp_path).read_results()
