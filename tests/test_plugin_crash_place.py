"""A plugin's crash stays one line and says where it was raised, in the plugin's own file (issue 31):
`failed in training on digits: IndexError('list index out of range')` named no place; with
NEVISBENCH_TRACEBACK=1 the full traceback is printed above the line."""

from __future__ import annotations

import inspect

from conftest import TINY, register_learner

from nevisbench import Learner, TaskModule
from nevisbench.cli import main


def _look_up(items, k):
    return items[k]  # the line the crash is raised on


class _Breaks(TaskModule):
    def training_step(self, batch, batch_idx):
        return _look_up([], 3)


class BreaksInTraining(Learner):
    def begin_task(self, task, backbone):
        module = self.task_module(backbone, task)
        module.__class__ = _Breaks
        return module


LINE = inspect.getsourcelines(_look_up)[1] + 1


def _crash(capsys, monkeypatch, tmp_path):
    register_learner(monkeypatch, "breaks", "test_plugin_crash_place:BreaksInTraining")
    code = main(["run", *TINY, "learner=breaks", "stream.tasks=[faces]", f"out_dir={tmp_path}"])
    return code, capsys.readouterr().err


def test_a_plugin_crash_is_one_line_naming_the_plugins_file_and_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("NEVISBENCH_TRACEBACK", raising=False)
    code, err = _crash(capsys, monkeypatch, tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "Learner 'breaks' failed in training on faces: IndexError('list index out of range')" in err
    assert f"raised at {__file__}:{LINE}" in err and "NEVISBENCH_TRACEBACK=1" in err


def test_the_switch_shows_the_full_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NEVISBENCH_TRACEBACK", "1")
    code, err = _crash(capsys, monkeypatch, tmp_path)
    assert code == 2 and "Traceback (most recent call last)" in err and "in _look_up" in err
    assert err.rstrip().splitlines()[-1].startswith("error: Learner 'breaks' failed in training on faces")
