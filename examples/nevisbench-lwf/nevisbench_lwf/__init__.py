"""`lwf`: Learning without Forgetting (Li & Hoiem, 2016). While a new task trains, the model as it
was before the task (the teacher) labels the new task's images with every earlier head, and the
student keeps those outputs (knowledge distillation at temperature T); earlier heads train on.

An example of a continual-learning plugin written against nevisbench's public API only:
- the teacher forward runs inside `training_step` under `torch.no_grad()`, so the meter charges
  it as training (a step costs about 4/3 of a finetuning step: one more forward);
- earlier heads live in the module and in `state_dict`, and `revisit_module` predicts an earlier
  task with its own head as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule
from nevisbench.api.learner import clone_module

__all__ = ["LwFConfig", "LwFLearner"]


@dataclass
class LwFConfig(LearnerConfig):
    name: str = "lwf"
    distill_weight: float = 1.0  # lambda_o of the paper: weight of the distillation loss
    temperature: float = 2.0  # T of the paper

    def validate(self) -> None:
        for key, low in (("distill_weight", 0.0), ("temperature", 1e-6)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected a number >= {low:g}")


class DistillModule(TaskModule):
    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, old_heads: dict[int, nn.Module],
                 config: LwFConfig) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.old_heads = nn.ModuleDict({str(j): h for j, h in old_heads.items()})
        self.config = config
        # the teacher: the backbone and heads as the task found them, frozen (not a submodule of the
        # student's optimizer; kept in a list so Lightning does not train or checkpoint it twice)
        teacher = nn.ModuleDict({"backbone": clone_module(backbone), "heads": clone_module(self.old_heads)})
        self.teacher = [teacher.requires_grad_(False).eval()]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if not len(self.old_heads) or self.config.distill_weight == 0:
            return super().training_step(batch, batch_idx)
        x, y = batch
        features = self.backbone(x)  # once: the new head and every old head read the same features
        logits = self.head(features)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self.log("train/loss", loss, prog_bar=True)
        teacher = self.teacher[0].to(x.device)
        with torch.no_grad():
            old_features = teacher["backbone"](x)
        t = self.config.temperature
        distill = x.new_zeros(())
        for j, head in self.old_heads.items():
            target = torch.softmax(teacher["heads"][j](old_features) / t, dim=1)
            distill = distill + nn.functional.kl_div(torch.log_softmax(head(features) / t, dim=1), target,
                                                     reduction="batchmean") * t * t
        self.log("train/distill_loss", distill)
        return loss + self.config.distill_weight * distill / len(self.old_heads)


class LwFLearner(Learner):
    Config = LwFConfig
    config: LwFConfig

    def __init__(self, config: LwFConfig, context: Any) -> None:
        super().__init__(config, context)
        self.heads: dict[int, dict[str, torch.Tensor]] = {}  # task index -> its head's weights

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        old = {}
        for j, weights in self.heads.items():
            old[j] = nn.Linear(int(weights["weight"].shape[1]), int(weights["weight"].shape[0]))
            old[j].load_state_dict(weights)
        return DistillModule(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train,
                             old_heads=old, config=self.config)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        self.heads[task.index] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        for j, head in module.old_heads.items():
            self.heads[int(j)] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}

    def revisit_module(self, task: TaskInfo, module: Any, head: nn.Module | None) -> nn.Module:
        return nn.Sequential(module.backbone, module.old_heads[str(task.index)])

    def state_dict(self) -> dict[str, Any]:
        return {"heads": {str(j): dict(h) for j, h in self.heads.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.heads = {int(j): dict(h) for j, h in state["heads"].items()}
