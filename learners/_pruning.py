"""Config and checks shared by the pruning learners (the paper's semantics).

`sparsity` X means the pruned network keeps (1 - X) of the dense FLOPs: weight and kernel pruning
remove a fraction X of weights/kernels per layer (`scope=local`) or across layers (`scope=global`);
channel pruning removes 1 - sqrt(1 - X) of the channels. `signal` is `magnitude` (L1) or `random`
(the paper's ablation). Pruning is zero-shot: from the pretrained weights, before the first task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nevisbench.errors import ConfigError, choice_error
from nevisbench.api.learner import LearnerConfig

__all__ = ["PruneConfig", "scores"]


@dataclass
class PruneConfig(LearnerConfig):
    sparsity: float = 0.5
    scope: str = "local"  # local | global
    signal: str = "magnitude"  # magnitude | random
    prune_stem: bool = True  # also prune the stem convolution

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"Invalid value for 'learner.sparsity': {self.sparsity}; it must be in [0, 1)")
        if self.scope not in ("local", "global"):
            raise choice_error("value for 'learner.scope':", self.scope, ("local", "global"))
        if self.signal not in ("magnitude", "random"):
            raise choice_error("value for 'learner.signal':", self.signal, ("magnitude", "random"))


def scores(values: torch.Tensor, signal: str, generator: torch.Generator) -> torch.Tensor:
    """Importance of each element: its magnitude, or uniform noise for the random ablation."""
    if signal == "random":
        return torch.rand(values.shape, generator=generator)
    return values.abs()
