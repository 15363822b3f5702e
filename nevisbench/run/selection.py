"""Best-dev model selection (the Nevis protocol): of the models seen at the anytime milestones,
the one with the lowest dev error is the one scored on dev_test and test. A Lightning callback only
so that the kept weights travel with the mid-task checkpoints (resume keeps the selection)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

__all__ = ["BestDevSelection"]


class BestDevSelection(L.Callback):
    """Keeps a CPU copy of the module's weights at the best dev error so far (ties: the later model)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.error: float | None = None
        self.step: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def consider(self, module: torch.nn.Module, error: float, step: int) -> None:
        if self.enabled and (self.error is None or error <= self.error):
            self.error, self.step = error, step
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def restore(self, module: torch.nn.Module) -> dict[str, Any]:
        """Load the selected weights into `module`; say which model is scored."""
        if not self.enabled or self._state is None:
            return {"rule": "last"}
        try:
            module.load_state_dict(self._state)
        except RuntimeError:  # the module changed its structure after that milestone (e.g. compaction)
            return {"rule": "last", "reason": "the module's structure changed after the best-dev milestone"}
        return {"rule": "best_dev", "step": self.step, "dev_error": self.error}

    def state_dict(self) -> dict[str, Any]:
        return {"error": self.error, "step": self.step, "weights": self._state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error, self.step, self._state = state["error"], state["step"], state["weights"]
