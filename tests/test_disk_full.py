"""A full disk while the harness writes its own files: one line naming the file and saying the
disk is full, never the learner's failure, and no temporary file left behind (issue 34)."""

from __future__ import annotations

import errno

import pytest

from nevisbench.config import compose
from nevisbench.errors import PluginError, WriteFailed
from nevisbench.run.runner import run
from nevisbench.run.store.results import atomic_write_bytes


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_atomic_write_on_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path):
    def half_then_full(handle):
        handle.write(b"x" * 1000)
        _full()

    with pytest.raises(WriteFailed) as info:
        atomic_write_bytes(tmp_path / "summary.json", half_then_full)
    message = str(info.value)
    assert "summary.json" in message and "the disk is full" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_full_disk_while_writing_the_mid_task_checkpoint_is_not_the_learners_failure(tmp_path, tiny, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    def partial_then_full(checkpoint, path):
        with open(path, "wb") as handle:
            handle.write(b"partial checkpoint")
        _full()

    monkeypatch.setattr(torch_io, "_atomic_save", partial_then_full)
    cfg = compose([*tiny, "train.max_steps=4", "train.checkpoint_every_n_steps=2", "stream.tasks=[faces]",
                   "budget.milestones=0", "run_name=r", f"out_dir={tmp_path}"])
    with pytest.raises(WriteFailed) as info:
        run(cfg)
    assert not isinstance(info.value, PluginError) and info.value.exit_code == 1
    message = str(info.value)
    assert "task_0.ckpt" in message and "the disk is full" in message and "finetune" not in message
    state = tmp_path / "r" / "state"
    assert not [p.name for p in state.iterdir() if p.name.endswith(".tmp") or p.suffix == ".ckpt"]


def test_a_full_disk_inside_a_hook_is_not_the_learners_failure():
    from nevisbench.run.learner.plugin import plugin_hook

    with pytest.raises(WriteFailed, match="during end_task\\(x\\): the disk is full"):
        with plugin_hook("someone", "end_task(x)"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PluginError, match="Learner 'someone' failed in end_task"):
        with plugin_hook("someone", "end_task(x)"):
            raise OSError(errno.EACCES, "Permission denied")
