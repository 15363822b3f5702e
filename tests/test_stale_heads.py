"""An old plugin that keeps and trains its own copies of earlier tasks' heads, without
`revisit_module` (ER or LwF written before it existed), is scored with the heads the harness kept:
it is warned once and the forgetting it reports is marked (issue 31)."""

from __future__ import annotations

import copy

from conftest import register_learner
from torch import nn

from nevisbench import Learner, TaskModule
from nevisbench.testing import run_learner


class _KeepsHeads(TaskModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        features = self.backbone(batch[0])
        return loss + sum(1e-3 * head(features).mean() for head in self.old_heads.values())  # trains them further


class OwnHeads(Learner):
    def __init__(self, config, context):
        super().__init__(config, context)
        self.heads: dict[str, nn.Module] = {}

    def begin_task(self, task, backbone):
        module = _KeepsHeads(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)
        module.old_heads = nn.ModuleDict(copy.deepcopy(self.heads))
        return module

    def end_task(self, task, module):
        self.heads = {**{k: copy.deepcopy(h) for k, h in module.old_heads.items()}, str(task.index): copy.deepcopy(module.head)}


class OwnHeadsRevisited(OwnHeads):
    def revisit_module(self, task, module, head):
        return nn.Sequential(module.backbone, module.old_heads[str(task.index)])


REVISIT = ["scenario=continual", "eval.revisit=true", "train.max_steps=3"]


def test_an_old_plugin_training_its_own_heads_is_warned_once_and_its_forgetting_marked(monkeypatch, tmp_path, capsys):
    register_learner(monkeypatch, "own_heads", "test_stale_heads:OwnHeads")
    summary = run_learner("own_heads", tmp_path, [*REVISIT, "stream.tasks=[faces,shapes,digits]"])
    out = capsys.readouterr().out
    first, second, _ = (line["task"] for line in summary["_lines"])
    assert [line["revisit"]["stale_heads"] for line in summary["_lines"][1:]] == [[first], [first, second]]
    assert summary["continual"]["stale_heads"] == sorted([first, second])
    assert out.count("does not override revisit_module") == 1


def test_a_plugin_that_predicts_with_its_own_heads_is_not_marked(monkeypatch, tmp_path, capsys):
    register_learner(monkeypatch, "own_heads_ok", "test_stale_heads:OwnHeadsRevisited")
    summary = run_learner("own_heads_ok", tmp_path, REVISIT)
    assert "stale_heads" not in summary["_lines"][1]["revisit"] and "stale_heads" not in summary["continual"]
    assert "does not override revisit_module" not in capsys.readouterr().out
