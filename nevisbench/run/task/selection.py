"""Best-dev model selection (the Nevis protocol): of the models validated on dev, the one with the
lowest dev error is the one scored on dev_test and test (ties: the earlier, as dm_nevis keeps a model
only on a strict improvement). `LinearValidation` validates as dm_nevis does
(`protocol.validate_every_n_steps=n`: after steps 0, n, 2n, ... and after the last step); with n = 0
the anytime milestones are the validations. `BestDevSelection` is a Lightning callback only so that
the kept weights travel with the mid-task checkpoints (resume keeps the selection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

__all__ = ["BestDevSelection", "LinearValidation"]


class BestDevSelection(L.Callback):
    """Keeps a CPU copy of the module's weights at the best dev error so far (ties: the earlier model)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.error: float | None = None
        self.step: int | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self.validations: list[list[float]] = []  # [step, dev error] of every model considered

    def consider(self, module: torch.nn.Module, error: float, step: int) -> None:
        if self.enabled and (not self.validations or self.validations[-1][0] != step):
            self.validations.append([step, error])
        if self.enabled and (self.error is None or error < self.error):
            self.error, self.step = error, step
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def restore(self, module: torch.nn.Module) -> dict[str, Any]:
        """Load the selected weights into `module`; say which model is scored."""
        if not self.enabled or self._state is None:
            return {"rule": "last"}
        try:
            module.load_state_dict(self._state)
        except RuntimeError:  # the module changed its structure after that validation (e.g. compaction)
            return {"rule": "last", "reason": "the module's structure changed after the best-dev validation"}
        return {"rule": "best_dev", "step": self.step, "dev_error": self.error, "validations": self.validations}

    def state_dict(self) -> dict[str, Any]:
        return {"error": self.error, "step": self.step, "weights": self._state, "validations": self.validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error, self.step, self._state = state["error"], state["step"], state["weights"]
        self.validations = list(state.get("validations", []))


class LinearValidation(L.Callback):
    """dm_nevis's validation cadence: `validate()` after the optimizer steps 0, n, 2n, ... (0-based)
    and once more after the last step (`final_error`: the trial's cost in dm_nevis's search). It
    must come after PlanCallback, so its evaluations are not counted as training time."""

    def __init__(self, every: int, validate: Callable[[], float], meter: Any) -> None:
        self.every, self.validate, self.meter = every, validate, meter
        self.final_error: float | None = None

    def _run(self) -> float:
        with self.meter.paused():  # evaluation compute, charged as eval by the evaluation itself
            return self.validate()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.global_step - 1) % self.every == 0:
            self._run()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:
            self.final_error = self._run()
