"""The scenario: which backbone each task starts from. `transfer`: a copy of the prepared backbone
for every task. `continual`: a copy of the backbone the previous task ended with (a new head per
task). Owned by the runner, so a learner cannot change it."""

from __future__ import annotations

from typing import Any

from torch import nn

from nevisbench.api.learner import clone_module
from nevisbench.errors import PluginError

__all__ = ["Scenario"]


class Scenario:
    def __init__(self, name: str, initial: nn.Module, *, learner_name: str = "learner") -> None:
        self.name = name
        self.initial = initial
        self.carried: nn.Module | None = None
        self.learner_name = learner_name

    def start(self) -> nn.Module:
        """A private copy of the backbone the next task starts from."""
        source = self.carried if (self.name == "continual" and self.carried is not None) else self.initial
        return clone_module(source)

    def finish(self, module: nn.Module) -> None:
        """Keep the backbone `module` ended with, for the next task (continual only)."""
        if self.name != "continual":
            return
        backbone = getattr(module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise PluginError(f"Learner '{self.learner_name}': scenario=continual carries the trained backbone to the "
                              f"next task, but its {type(module).__name__} has no `backbone` submodule; "
                              "keep the backbone in `module.backbone` (as TaskModule does)")
        self.carried = backbone

    def state_dict(self) -> dict[str, Any]:
        return {"carried": None if self.carried is None else self.carried.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("carried") is not None:
            self.carried = clone_module(self.initial)
            self.carried.load_state_dict(state["carried"])
