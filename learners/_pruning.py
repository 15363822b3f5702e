"""Config and mask rules shared by the pruning learners (the paper's semantics).

`sparsity` X means the pruned network keeps (1 - X) of the dense FLOPs: weight and kernel pruning
remove a fraction X of weights/kernels per layer (`scope=local`) or across layers (`scope=global`);
channel pruning removes about 1 - sqrt(1 - X) of the channels (calibrated on the FLOP meter).
`signal` is `magnitude` (L1) or `random` (the paper's ablation). Pruning is zero-shot: from the
pretrained weights, before the first task.

No rule empties a layer: every output channel keeps at least one weight (one kernel, one input).
Without that floor a layer with few inputs per output (the stem reads 3 channels) is emptied at
high sparsity, and the network's output stops depending on its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nevisbench.api.learner import LearnerConfig
from nevisbench.errors import ConfigError, choice_error

__all__ = ["PruneConfig", "scores", "top_mask", "global_masks"]


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


def _protect_row_best(score: torch.Tensor) -> torch.Tensor:
    """`score` with each output channel's (row's) best element raised to +inf, so any top-k or
    threshold that keeps at least as many elements as there are rows keeps one per row."""
    rows = score.flatten(1).clone()
    rows.scatter_(1, rows.argmax(1, keepdim=True), float("inf"))
    return rows.view_as(score)


def top_mask(score: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """A 0/1 mask keeping the `keep_fraction` highest-scoring elements of a layer (ties broken by
    position), and at least the best element of every output channel (dim 0)."""
    keep = max(score.shape[0], round(keep_fraction * score.numel()))
    mask = torch.zeros(score.numel())
    mask[torch.topk(_protect_row_best(score).flatten(), min(keep, score.numel())).indices] = 1.0
    return mask.view_as(score)


def global_masks(layer_scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """0/1 masks from one threshold over all layers' scores, removing `sparsity` of the elements,
    except the best element of every output channel of every layer, which is always kept."""
    protected = [_protect_row_best(s) for s in layer_scores]
    flat = torch.cat([s.flatten() for s in protected])
    rows = sum(s.shape[0] for s in protected)
    keep = min(flat.numel(), max(rows, flat.numel() - round(sparsity * flat.numel())))
    threshold = torch.topk(flat, keep).values.min()
    return [(s >= threshold).float() for s in protected]
