"""`si`: Synaptic Intelligence (Zenke, Poole and Ganguli, ICML 2017, "Continual Learning Through
Synaptic Intelligence"). While a task trains, each backbone parameter's contribution to the drop in
the loss is summed along the trajectory, omega += -g * (theta_after - theta_before) at every
optimiser step; at the task's end its importance grows by omega / (delta^2 + xi), delta being how
far the parameter moved over the task, and later tasks pay c * sum(importance * (theta - anchor)^2).

Written against nevisbench's public API only:
- the running omega and the task's starting weights are *per-step* state: they live in module
  buffers (the `si_state` submodule), so a mid-task checkpoint saves and restores them with the
  weights and a resumed run's importance equals the uninterrupted one's;
- the consolidated importance and the anchor weights are the learner's `state_dict`;
- the bookkeeping runs in `optimizer_step` and the penalty in `training_step`, both inside the
  step's meter window; both are elementwise, which the meter does not count, so a step costs a
  finetuning step's FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["SIConfig", "SILearner"]


@dataclass
class SIConfig(LearnerConfig):
    name: str = "si"
    c: float = 1.0  # strength of the pull towards earlier tasks' weights
    xi: float = 1e-3  # damping: keeps the importance finite for a parameter that barely moved

    def validate(self) -> None:
        for key in ("c", "xi"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected a number >= 0")
        if not self.xi > 0:
            raise ConfigError(f"Invalid value for 'learner.xi': {self.xi!r}; expected a number > 0")


def _key(name: str) -> str:
    return name.replace(".", "__")  # a buffer's name cannot hold dots


class SIModule(TaskModule):
    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, learner: SILearner) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.learner = [learner]  # a list: not a submodule
        self.si_state = nn.Module()  # buffers only: omega_<name> (running) and start_<name> (theta at task start)
        for name, param in self._tracked().items():
            self.si_state.register_buffer(f"omega_{_key(name)}", torch.zeros_like(param.detach()))
            self.si_state.register_buffer(f"start_{_key(name)}", param.detach().clone())

    def _tracked(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.backbone.named_parameters() if p.requires_grad}

    def omega(self, name: str) -> torch.Tensor:
        return getattr(self.si_state, f"omega_{_key(name)}")

    def start(self, name: str) -> torch.Tensor:
        return getattr(self.si_state, f"start_{_key(name)}")

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        learner = self.learner[0]
        if not learner.importance:
            return loss
        penalty = loss.new_zeros(())
        for name, param in self._tracked().items():
            if name in learner.importance:
                weight, anchor = learner.importance[name].to(param.device), learner.anchor[name].to(param.device)
                penalty = penalty + (weight * (param - anchor) ** 2).sum()
        self.log("train/si_penalty", penalty)
        learner.last_penalty = penalty.detach()  # a tensor: no device sync per step; read in task_report
        return loss + learner.config.c * penalty

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        params = self._tracked()
        before = {n: p.detach().clone() for n, p in params.items()}
        super().optimizer_step(*args, **kwargs)  # runs the step's closure (forward, backward) and the update
        with torch.no_grad():
            for name, param in params.items():
                if param.grad is not None:  # the path integral of the gradient along this step's move
                    self.omega(name).add_(-param.grad * (param.detach() - before[name]))


class SILearner(Learner):
    Config = SIConfig
    config: SIConfig

    def __init__(self, config: SIConfig, context: Any) -> None:
        super().__init__(config, context)
        self.importance: dict[str, torch.Tensor] = {}  # consolidated importance of each backbone parameter
        self.anchor: dict[str, torch.Tensor] = {}  # its value when the last task ended
        self.last_penalty: torch.Tensor | None = None  # the penalty at the task's last step (None: no penalty yet)

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        return SIModule(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train,
                        learner=self)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        with torch.no_grad():
            for name, param in module._tracked().items():
                moved = param.detach() - module.start(name)
                gain = (module.omega(name) / (moved ** 2 + self.config.xi)).clamp(min=0).cpu()
                self.importance[name] = self.importance[name] + gain if name in self.importance else gain
                self.anchor[name] = param.detach().cpu().clone()

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """The consolidated importance after `task`, on the task's results line (`learner_report`)."""
        total = sum(float(v.double().sum()) for v in self.importance.values())
        penalty = None if self.last_penalty is None else float(self.last_penalty)
        self.last_penalty = None
        return {"importance_total": total, "parameters": sum(int(v.numel()) for v in self.importance.values()),
                "last_step_penalty": penalty}

    def state_dict(self) -> dict[str, Any]:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])
