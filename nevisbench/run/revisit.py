"""Revisit evaluation (`eval.revisit=true`, continual scenario): after each task, every earlier task
is scored again with the model as it now is and the head that task ended with, so forgetting is
measured. It fills the accuracy matrix R[i][j] (accuracy on task j after training task i) from
which `nevisbench.run.store.continual` derives average accuracy, backward transfer and forgetting.

The harness keeps each task's head (a `module.head` that is an `nn.Linear`, as `TaskModule`'s is)
and asks the learner for the model that predicts task j now (`Learner.revisit_module`; by default
the current module's backbone under task j's head). Every revisit batch is charged as evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from nevisbench.api.learner import Learner
from nevisbench.api.types import TaskInfo
from nevisbench.errors import PluginError, TaskFailed
from nevisbench.run.learner.data import StreamData
from nevisbench.run.learner.plugin import plugin_hook
from nevisbench.run.store.report import print_warning
from nevisbench.tasks.loader import BatchLoader

__all__ = ["Revisits"]

Evaluate = Callable[[nn.Module, TaskInfo, BatchLoader, str], float]
SPLITS = ("test", "dev")


class Revisits:
    """The heads of the tasks finished so far, and the revisit scores of each new task."""

    def __init__(self, cfg: DictConfig, learner_name: str) -> None:
        self.enabled = bool(cfg.get("eval", {}).get("revisit", False)) and cfg.scenario == "continual"
        self.cfg = cfg
        self.learner_name = learner_name
        self.heads: dict[int, nn.Linear] = {}
        self.warned = False  # the stale-head warning is given once per run

    def keep_head(self, index: int, module: nn.Module) -> None:
        """Keep a copy of the head task `index` ended with (nothing when its module has no Linear head:
        the learner's `revisit_module` then predicts without one)."""
        head = getattr(module, "head", None)
        if self.enabled and isinstance(head, nn.Linear):
            copy = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
            copy.load_state_dict({k: v.detach().cpu().clone() for k, v in head.state_dict().items()})
            self.heads[index] = copy.requires_grad_(False)

    def score(self, index: int, module: L.LightningModule, learner: Learner, data: StreamData, evaluate: Evaluate,
              device: torch.device, failed: dict[int, str] | None = None) -> dict[str, Any] | None:
        """Score tasks 0..index-1 with the model as it is after task `index`; None when off. An earlier
        task that `failed` (index -> its error) has no model to revisit: it is skipped, and so is one
        whose revisit outputs are not finite; each is recorded under `skipped` (task -> why) with
        null errors, and the others are scored."""
        if not self.enabled or index == 0:
            return None
        out: dict[str, Any] = {"tasks": [], **{f"{split}_error": [] for split in SPLITS}, "skipped": {}}
        for j, task in enumerate(data.tasks()[:index]):
            out["tasks"].append(task.key)
            errors: dict[str, float | None] = {split: None for split in SPLITS}
            if j in (failed or {}):
                out["skipped"][task.key] = f"the task failed: {(failed or {})[j]}"
            else:
                try:
                    errors = self._errors(j, task, module, learner, data, evaluate, device)
                except TaskFailed as exc:
                    out["skipped"][task.key] = str(exc)
            for split in SPLITS:
                out[f"{split}_error"].append(errors[split])
        if not out["skipped"]:
            del out["skipped"]
        stale = [task.key for j, task in enumerate(data.tasks()[:index]) if self._stale(j, module, learner)]
        if stale:  # the scores above used heads the learner no longer predicts with
            out["stale_heads"] = stale
            if not self.warned:
                self.warned = True
                print_warning(Console(), f"learner '{self.learner_name}' trains its own copies of earlier tasks' heads "
                              "but does not override revisit_module: earlier tasks are scored with the head each ended "
                              f"with ({', '.join(stale)}), so its forgetting is not what it would predict (marked "
                              "stale_heads in summary.json); override Learner.revisit_module")
        return out

    def _stale(self, j: int, module: nn.Module, learner: Learner) -> bool:
        """True when the learner scores task j with the default `revisit_module` (the head the harness
        kept) while its module holds a Linear layer of that head's shape, other than `module.head`,
        whose weights moved since: an old plugin that keeps and trains its own earlier heads (ER or LwF
        written before `revisit_module`), scored silently with the stale copy."""
        kept = self.heads.get(j)
        if kept is None or type(learner).revisit_module is not Learner.revisit_module:
            return False
        current = getattr(module, "head", None)
        shape = tuple(kept.weight.shape)
        for sub in module.modules():
            if isinstance(sub, nn.Linear) and sub is not current and tuple(sub.weight.shape) == shape:
                if not torch.equal(sub.weight.detach().cpu(), kept.weight):
                    return True
        return False

    def _errors(self, j: int, task: TaskInfo, module: L.LightningModule, learner: Learner, data: StreamData,
                evaluate: Evaluate, device: torch.device) -> dict[str, float | None]:
        head = self.heads.get(j)
        with plugin_hook(self.learner_name, f"revisit_module({task.key})"):
            model = learner.revisit_module(task, module, None if head is None else head.to(device))
            if not isinstance(model, nn.Module):
                raise PluginError(f"revisit_module returned {type(model).__name__}, expected an nn.Module")
        split_data = data.task_data(j)
        errors: dict[str, float | None] = {}
        for split in SPLITS:
            loader = BatchLoader(getattr(split_data, split), batch_size=int(self.cfg.data.eval_batch_size),
                                 image_size=int(self.cfg.data.image_size), train=False, device=device, resident=False)
            errors[split] = evaluate(model, task, loader, split)
        return errors

    def state_dict(self) -> dict[str, Any]:
        return {str(i): {k: v.clone() for k, v in head.state_dict().items()} for i, head in self.heads.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.heads = {}
        for i, weights in state.items():
            weight = weights["weight"]
            head = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias="bias" in weights)
            head.load_state_dict(weights)
            self.heads[int(i)] = head.requires_grad_(False)

