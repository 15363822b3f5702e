"""The public learner API.

A learner turns a backbone into one `LightningModule` per task. It is built from its config
(`Learner.Config`, a dataclass), prepares the backbone once per stream (`prepare`), returns a module
for each task (`begin_task`) and may keep state across tasks (`end_task`). It never sees the FLOP
meter, the results store or the loggers: the runner owns those, so no learner can under-report.

The base class implements both scenarios: in `transfer` every task starts from the prepared
backbone; in `continual` every task starts from the backbone the previous task ended with.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from nevisbench.api.types import LearnerConfig, LearnerContext, TaskInfo

if TYPE_CHECKING:  # torch and Lightning load only when a run starts, not to validate a config
    import lightning as L
    from torch import nn

__all__ = ["Learner", "LearnerConfig", "LearnerContext", "TaskInfo", "clone_module"]


def clone_module(module: nn.Module) -> nn.Module:
    """A deep copy of `module`. Tensors that hooks derive at every forward (e.g. the masked `weight`
    of `torch.nn.utils.prune`, weight_orig * weight_mask) are plain non-leaf attributes that
    deepcopy refuses; they are detached first, and the hook recomputes them at the next forward."""
    import torch

    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                setattr(sub, name, value.detach())
    return copy.deepcopy(module)


class Learner:
    """Base class of every learner. Subclasses set `Config` and usually override `prepare` and/or
    `build_module`; the scenario logic (transfer vs continual) lives here."""

    Config: ClassVar[type[LearnerConfig]] = LearnerConfig

    def __init__(self, config: LearnerConfig, context: LearnerContext) -> None:
        self.config = config
        self.context = context
        self.feature_dim = context.feature_dim  # prepare() may change it (pruning, truncation)
        self._initial: nn.Module | None = None
        self._carried: nn.Module | None = None

    # -- hooks a learner overrides ---------------------------------------------------------------
    def prepare(self, backbone: nn.Module) -> nn.Module:
        """Adapt the pretrained backbone once per stream (prune it, add adapters, ...)."""
        return backbone

    def build_module(self, backbone: nn.Module, task: TaskInfo) -> L.LightningModule:
        """Wrap this task's starting backbone in a LightningModule with a new head."""
        from torch import nn

        from nevisbench.api.module import TaskModule

        head = nn.Linear(self.feature_dim, task.num_classes)
        return TaskModule(backbone, head, task=task, train=self.context.train)

    # -- the API the runner calls ----------------------------------------------------------------
    def setup(self, backbone: nn.Module) -> None:
        """Called once per stream with the freshly built backbone."""
        self._initial = self.prepare(backbone)

    def begin_task(self, task: TaskInfo) -> L.LightningModule:
        if self._initial is None:
            raise RuntimeError("Learner.setup(backbone) must be called before begin_task")
        start = self._carried if (self.context.scenario == "continual" and self._carried is not None) else self._initial
        return self.build_module(clone_module(start), task)

    def end_task(self, task: TaskInfo, module: L.LightningModule) -> None:
        if self.context.scenario == "continual":
            self._carried = module.backbone

    def state_dict(self) -> dict[str, Any]:
        """State carried across tasks (the continual backbone), for resuming a run."""
        return {"carried": None if self._carried is None else self._carried.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("carried") is not None and self._initial is not None:
            self._carried = clone_module(self._initial)
            self._carried.load_state_dict(state["carried"])
