"""`er`: experience replay (Chaudhry et al., 2019, "On Tiny Episodic Memories in Continual
Learning"). After each task a few of its training examples join a memory; every training step
then adds a replay batch from the memory, scored by the head of the task it came from.

An example of a continual-learning plugin written against nevisbench's public API only:
- the memory holds example *indices* (small, in `state_dict`, so resume restores it); their images
  come from the harness, `self.context.data.train_examples` (training splits only);
- each earlier task keeps its own head, trained further by replay, so `revisit_module` predicts an
  earlier task with that head (`eval.revisit=true` then measures what replay preserved);
- the replay forward and backward run inside `training_step`, so the meter charges them (a step
  costs about twice a finetuning step at `replay_batch_size = data.batch_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["ERConfig", "ERLearner"]


@dataclass
class ERConfig(LearnerConfig):
    name: str = "er"
    memory_per_task: int = 50  # training examples of each finished task kept (as indices)
    replay_batch_size: int = 0  # examples replayed per step; 0: the same as data.batch_size
    replay_weight: float = 1.0  # weight of the replay loss against the current task's loss

    def validate(self) -> None:
        for key in ("memory_per_task", "replay_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected an integer >= 0")
        if not isinstance(self.replay_weight, (int, float)) or not self.replay_weight >= 0:
            raise ConfigError(f"Invalid value for 'learner.replay_weight': {self.replay_weight!r}; expected a number >= 0")


class ReplayModule(TaskModule):
    """The current task's module plus the heads of earlier tasks and the replay step."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, learner: ERLearner,
                 old_heads: dict[int, nn.Module]) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.old_heads = nn.ModuleDict({str(j): h for j, h in old_heads.items()})
        self.learner = [learner]  # a list: not a submodule, not in the checkpoint

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        learner = self.learner[0]
        memory = learner.memory
        if not memory or learner.config.replay_weight == 0:
            return loss
        # the draw depends on (seed, task, step) only, so a run resumed mid-task replays the same examples
        generator = torch.Generator().manual_seed(learner.context.seed * 1_000_003 + self.task.index * 10_007 + self.global_step)
        tasks = sorted(memory)
        j = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
        size = learner.config.replay_batch_size or int(batch[0].shape[0])
        kept = torch.as_tensor(memory[j])
        picks = kept[torch.randint(len(kept), (size,), generator=generator)]
        x, y = learner.context.data.train_examples(j, picks, augment=True, generator=generator, device=self.device)
        logits = self.old_heads[str(j)](self.backbone(x.to(batch[0].dtype)))
        replay = nn.functional.cross_entropy(logits, y) if not learner._task_multi_label(j) else \
            nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        self.log("train/replay_loss", replay)
        return loss + learner.config.replay_weight * replay


class ERLearner(Learner):
    Config = ERConfig
    config: ERConfig

    def __init__(self, config: ERConfig, context: Any) -> None:
        super().__init__(config, context)
        self.memory: dict[int, list[int]] = {}  # task index -> indices into its training split
        self.heads: dict[int, dict[str, torch.Tensor]] = {}  # task index -> its head's weights
        self._multi_label: dict[int, bool] = {}

    def _task_multi_label(self, index: int) -> bool:
        return self._multi_label.get(index, False)

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        if self.context.data is None:
            raise RuntimeError("learner 'er' needs the harness's data access (context.data); run it through nevisbench")
        self._multi_label[task.index] = task.multi_label
        head = nn.Linear(self.feature_dim, task.num_classes)
        old = {}
        for j, weights in self.heads.items():
            old[j] = nn.Linear(int(weights["weight"].shape[1]), int(weights["weight"].shape[0]))
            old[j].load_state_dict(weights)
        return ReplayModule(backbone, head, task=task, train=self.context.train, learner=self, old_heads=old)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        self.heads[task.index] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        for j, head in module.old_heads.items():  # replay trained the earlier heads further
            self.heads[int(j)] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        if self.config.memory_per_task:
            generator = torch.Generator().manual_seed(self.context.seed * 7_919 + task.index)
            n = self.context.data.num_train(task)
            self.memory[task.index] = torch.randperm(n, generator=generator)[: self.config.memory_per_task].tolist()

    def revisit_module(self, task: TaskInfo, module: Any, head: nn.Module | None) -> nn.Module:
        return nn.Sequential(module.backbone, module.old_heads[str(task.index)])

    def state_dict(self) -> dict[str, Any]:
        return {"memory": {str(j): list(v) for j, v in self.memory.items()},
                "heads": {str(j): dict(h) for j, h in self.heads.items()},
                "multi_label": {str(j): v for j, v in self._multi_label.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = {int(j): [int(i) for i in v] for j, v in state["memory"].items()}
        self.heads = {int(j): dict(h) for j, h in state["heads"].items()}
        self._multi_label = {int(j): bool(v) for j, v in state["multi_label"].items()}
