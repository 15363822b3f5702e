"""`ewc`: online Elastic Weight Consolidation (Kirkpatrick et al., 2017; the online form of Schwarz
et al., 2018). After each task the diagonal Fisher information of the backbone's weights is
estimated on that task's training examples; later tasks pay lambda/2 * sum F (theta - theta*)^2
for moving the weights that mattered.

An example of a continual-learning plugin written against nevisbench's public API only:
- the Fisher estimate draws its examples from the harness (`self.context.data.train_batch`) in
  `end_task`; its forward and backward passes are compute the meter charges to the task;
- the Fisher and the anchor weights are learner state (`state_dict`), so resume restores them;
- each task keeps the head it ended with (TaskModule's `head`), which the harness keeps for
  `eval.revisit`: no `revisit_module` of its own is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["EWCConfig", "EWCLearner"]


@dataclass
class EWCConfig(LearnerConfig):
    name: str = "ewc"
    ewc_lambda: float = 100.0  # strength of the pull towards earlier tasks' weights
    gamma: float = 1.0  # online EWC: the old Fisher decays by gamma before the new one is added
    fisher_batches: int = 4  # batches of training examples the Fisher is estimated on
    fisher_batch_size: int = 32

    def validate(self) -> None:
        for key in ("ewc_lambda", "gamma"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected a number >= 0")
        for key in ("fisher_batches", "fisher_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected an integer >= 1")


class EWCModule(TaskModule):
    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, learner: EWCLearner) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.learner = [learner]  # a list: not a submodule

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        learner = self.learner[0]
        if not learner.fisher:
            return loss
        penalty = loss.new_zeros(())
        for name, param in self.backbone.named_parameters():
            if name in learner.fisher:
                fisher, anchor = learner.fisher[name].to(param.device), learner.anchor[name].to(param.device)
                penalty = penalty + (fisher * (param - anchor) ** 2).sum()
        self.log("train/ewc_penalty", penalty)
        return loss + learner.config.ewc_lambda / 2 * penalty


class EWCLearner(Learner):
    Config = EWCConfig
    config: EWCConfig

    def __init__(self, config: EWCConfig, context: Any) -> None:
        super().__init__(config, context)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        return EWCModule(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train,
                         learner=self)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        if self.context.data is None:
            raise RuntimeError("learner 'ewc' needs the harness's data access (context.data); run it through nevisbench")
        cfg = self.config
        params = {n: p for n, p in module.backbone.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
        generator = torch.Generator().manual_seed(self.context.seed * 7_919 + task.index)
        device = next(module.parameters()).device
        training = module.training
        module.eval()  # BatchNorm statistics stay as the task left them
        for _ in range(cfg.fisher_batches):
            x, y = self.context.data.train_batch(task, cfg.fisher_batch_size, generator=generator, augment=False, device=device)
            module.zero_grad(set_to_none=True)
            logits = module(x)
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, y.float()) if task.multi_label
                    else nn.functional.cross_entropy(logits, y))
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().cpu() ** 2 / cfg.fisher_batches
        module.zero_grad(set_to_none=True)
        module.train(training)
        self.fisher = {n: cfg.gamma * self.fisher.get(n, torch.zeros_like(f)) + f for n, f in fisher.items()}
        self.anchor = {n: p.detach().cpu().clone() for n, p in params.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])
