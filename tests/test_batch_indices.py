"""A module that opts in (`batch_indices = True`) gets each training batch's positions in the task's
training split beside the batch, so a memory keyed by example (DER++, iCaRL, GDumb) needs no extra
pass; a module that unpacks `x, y = batch` keeps two-element batches."""

from __future__ import annotations

import torch
from conftest import register_learner

from nevisbench import Learner, TaskModule
from nevisbench.tasks.loader import BatchLoader, Split
from nevisbench.testing import run_learner


def _split(n: int = 10) -> Split:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return Split(images, torch.arange(n) % 3)


def test_the_loader_yields_each_batchs_positions_in_the_split_when_asked():
    split = _split()
    plain = next(iter(BatchLoader(split, batch_size=4, image_size=4, train=True, augment=False, seed=1)))
    assert len(plain) == 2  # x, y = batch still unpacks
    x, y, index = next(iter(BatchLoader(split, batch_size=4, image_size=4, train=True, augment=False, seed=1,
                                        indices=True)))
    assert index.dtype == torch.int64 and index.shape == (4,)
    assert torch.equal(y, split.labels[index])
    assert torch.equal(x, plain[0])  # the same shuffled batch: only the indices were added
    assert torch.equal(x[:, 0, 0, 0], ((index.float() - 0.485 * 255) / (0.229 * 255)))  # image i holds value i


class _SeesIndices(TaskModule):
    batch_indices = True
    seen: list[tuple[int, list[int], bool]] = []

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        _, labels = self.context_data.train_examples(self.task.index, index)
        _SeesIndices.seen.append((self.task.index, index.tolist(), bool(torch.equal(labels, y))))
        return super().training_step(batch, batch_idx)


class IndexLearner(Learner):
    def begin_task(self, task, backbone):
        module = _SeesIndices(backbone, torch.nn.Linear(self.feature_dim, task.num_classes), task=task,
                              train=self.context.train)
        module.context_data = self.context.data
        return module


def test_a_module_that_opts_in_trains_on_indices_that_name_its_examples(monkeypatch, tmp_path):
    register_learner(monkeypatch, "sees_indices", "test_batch_indices:IndexLearner")
    _SeesIndices.seen.clear()
    lines = run_learner("sees_indices", tmp_path, ["scenario=continual", "train.max_steps=3"])["_lines"]
    assert [line["status"] for line in lines] == ["ok", "ok"]
    assert [task for task, _, _ in _SeesIndices.seen] == [0, 0, 0, 1, 1, 1]
    assert all(agree for _, _, agree in _SeesIndices.seen)  # the labels at those indices are the batch's
    steps = [index for _, index, _ in _SeesIndices.seen]
    assert all(len(set(index)) == len(index) == 16 for index in steps)  # a batch's distinct examples
    assert steps[0] != steps[1]  # shuffled, not positions 0..15 each step
