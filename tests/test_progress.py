"""The task's progress bar counts the task's planned steps, shows evaluation and compilation as
phases of their own, and Lightning's `srun` warning is not printed on machines with SLURM."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pytest

from nevisbench.config import compose
from nevisbench.run.runner import run
from nevisbench.run.task import lightning as trainer_module
from nevisbench.run.task.progress_bar import TaskProgressBar


def _bars(monkeypatch: pytest.MonkeyPatch) -> list[TaskProgressBar]:
    """Every bar the runs of this test build, kept to read their state after the run."""
    made: list[TaskProgressBar] = []
    build = trainer_module._progress_bar

    def keep() -> TaskProgressBar:
        made.append(build())
        return made[-1]

    monkeypatch.setattr(trainer_module, "_progress_bar", keep)
    return made


@pytest.mark.slow
def test_bar_counts_max_steps_not_the_epochs_batches(tmp_path, tiny, monkeypatch):
    # digits: 1437+ training images, 89 batches of 16 per epoch; the task trains 7 steps
    bars = _bars(monkeypatch)
    cfg = compose([*tiny, "train.max_steps=7", "trainer.progress_bar=true", f"out_dir={tmp_path}",
                   "stream.tasks=[digits]", "budget.milestones=2"])
    run(cfg)
    (bar,) = bars
    assert bar.shown["train"] == ("digits train", 7, 7)
    assert bar.trainer.num_training_batches > 7  # the epoch is longer than the task
    description, done, total = bar.shown["evaluating"]  # dev milestones and the test: a phase of their own
    assert description == "digits evaluating" and done == total and total > 0


@pytest.mark.slow
def test_bar_counts_the_budget_plan(tmp_path, tiny, monkeypatch):
    # a FLOP budget decides the step count during step 0: the bar's total is that plan, not the epoch
    from nevisbench.api.schedule import planned_steps

    bars = _bars(monkeypatch)
    seen: list[int | None] = []
    original = TaskProgressBar._show_train

    def spy(self):
        seen.append(planned_steps(self.trainer))
        original(self)

    monkeypatch.setattr(TaskProgressBar, "_show_train", spy)
    cfg = compose([*tiny, "trainer.progress_bar=true", f"out_dir={tmp_path}", "stream.tasks=[digits]",
                   "budget.flops_per_task=4e9", "budget.milestones=0"])
    out = run(cfg)
    (bar,) = bars
    steps = int(__import__("json").loads((out / "results.jsonl").read_text().splitlines()[0])["steps"])
    assert bar.shown["train"] == ("digits train", steps, steps)
    assert 1 < steps < bar.trainer.num_training_batches * 3
    assert set(seen[1:]) == {steps}  # from step 0's end on, the total is the plan


def test_compile_phase_is_shown_while_compiling(monkeypatch):
    from nevisbench.run.task import compiling

    bar = TaskProgressBar()
    added: list[str] = []
    monkeypatch.setattr(TaskProgressBar, "_label", lambda self: "t")
    monkeypatch.setattr(TaskProgressBar, "_add_task", lambda self, total, description, visible=True: added.append(description) or 0)

    class _Progress:
        def update(self, *args, **kwargs):
            pass

        refresh = soft_refresh = update

    bar.progress = _Progress()
    compiling.add_listener(bar._on_compile)
    try:
        compiling._started(None)
        assert added == ["t compiling"]
        compiling._ended(None)
    finally:
        compiling.remove_listener(bar._on_compile)
    assert bar.shown["compile"][0].startswith("t compiled in ")


def _fake_srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


def test_srun_warning_is_silenced_and_only_it(tmp_path, monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_warn
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    _fake_srun(tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SLURMEnvironment._validate_srun_used()
        assert any("srun" in str(w.message) for w in caught)  # the machine looks like a SLURM one
        caught.clear()
        trainer_module.quiet_lightning()
        SLURMEnvironment._validate_srun_used()
        rank_zero_warn("another possible user warning", category=PossibleUserWarning)
    assert [str(w.message) for w in caught] == ["another possible user warning"]


def test_evaluation_phase_on_a_trainer_that_never_fitted(tmp_path, tiny):
    # a search winner rebuilt from its saved weights is scored with a fresh trainer: its bar shows
    # the evaluation too, and every batch still reaches the evaluation
    import torch

    from nevisbench.run.task.progress_bar import eval_phase

    cfg = compose([*tiny, "trainer.progress_bar=true"])
    trainer = trainer_module.make_trainer(cfg, precision="32-true", device=torch.device("cpu"), steps_per_epoch=1,
                                          budgeted=False, callbacks=[], logger=False, root_dir=str(tmp_path))
    assert list(eval_phase(trainer, [1, 2, 3])) == [1, 2, 3]
    assert trainer.progress_bar_callback.shown["evaluating"] == ("task evaluating", 3, 3)
    assert list(eval_phase(None, [4])) == [4]  # no trainer: the batches unchanged
