"""Hard-concrete (L0) gates: Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0
Regularization" (ICLR 2018), with the constants and the evaluation rule of CoFiPruning (Xia, Zhong
& Chen, ACL 2022, `models/l0_module.py`).

A gate z in [0, 1] is a stretched, clamped binary-concrete sample: u ~ U(0, 1),
s = sigmoid((log u - log(1 - u) + log_alpha) / temperature), z = clamp(s (r - l) + l, 0, 1), so it
is exactly 0 or 1 with positive probability. P(z > 0) is differentiable in log_alpha (the expected
L0 norm). At evaluation a group of gates is deterministic: its expected number of open gates is
kept (the highest log-alphas), each with the soft value sigmoid(log_alpha / temperature * 0.8).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["STRETCH", "TEMPERATURE", "LOG_ALPHA_RANGE", "GateSet", "init_log_alpha", "prob_open", "sample", "deterministic"]

STRETCH = (-0.1, 1.1)  # (l, r): CoFi's limit_a, limit_b
TEMPERATURE = 2.0 / 3.0  # CoFi's temperature (beta)
LOG_ALPHA_RANGE = (math.log(0.01), math.log(100.0))  # CoFi clamps log_alpha to this range
EVAL_SHARPNESS = 0.8  # CoFi's "magical_number": soft value of a kept gate at evaluation
_EPS = 1e-6


def init_log_alpha(shape: tuple[int, ...], keep: float, generator: torch.Generator) -> torch.Tensor:
    """CoFi's initialisation: log(keep / (1 - keep)) + N(0, 0.01^2)."""
    return math.log(keep / (1.0 - keep)) + 0.01 * torch.randn(shape, generator=generator)


def prob_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0) = 1 - Q(0), Q the CDF of the stretched concrete: sigmoid(log_alpha - T log(-l / r))."""
    left, right = STRETCH
    return torch.sigmoid(log_alpha - TEMPERATURE * math.log(-left / right))


def sample(log_alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One gate sample per log_alpha (noise drawn on the CPU from `generator`, for reproducible resumes)."""
    u = torch.rand(log_alpha.shape, generator=generator).clamp(_EPS, 1 - _EPS).to(log_alpha.device)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
    left, right = STRETCH
    return (s * (right - left) + left).clamp(0.0, 1.0)


def deterministic(log_alpha: torch.Tensor, keep: int | None = None, shift: float = 0.0) -> torch.Tensor:
    """The evaluation gates of one group: the `keep` highest (default: the expected number of open
    gates of `log_alpha + shift`, rounded) get their soft value, the others 0. The soft value is
    that of the unshifted log-alpha: a calibration shift changes how many units are kept, never
    the values of the kept ones."""
    flat = log_alpha.detach().flatten()
    if keep is None:
        keep = int(round(float(prob_open(flat + shift).sum())))
    keep = max(0, min(flat.numel(), keep))
    soft = torch.sigmoid(flat / TEMPERATURE * EVAL_SHARPNESS)
    out = torch.zeros_like(flat)
    if keep:
        top = torch.topk(flat, keep).indices
        out[top] = soft[top]
    return out.view_as(log_alpha)


class GateSet(nn.Module):
    """Named groups of gates, one log_alpha tensor per group (a group is what `deterministic`
    ranks together: e.g. the inner channels of one conv). `keep_init[name]` is the initial keep
    rate of the group."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], keep_init: dict[str, float], generator: torch.Generator) -> None:
        super().__init__()
        self.log_alpha = nn.ParameterDict({
            name: nn.Parameter(init_log_alpha(shape, keep_init[name], generator)) for name, shape in shapes.items()
        })

    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {name: sample(a, generator) for name, a in self.log_alpha.items()}

    def probs(self) -> dict[str, torch.Tensor]:
        return {name: prob_open(a) for name, a in self.log_alpha.items()}

    @torch.no_grad()
    def clamp_(self) -> None:
        for a in self.log_alpha.values():
            a.clamp_(*LOG_ALPHA_RANGE)

    def values(self) -> dict[str, torch.Tensor]:
        """The log-alphas as plain tensors (CPU copies), e.g. for a learner's state."""
        return {name: a.detach().cpu().clone() for name, a in self.log_alpha.items()}

    @torch.no_grad()
    def load_values(self, values: dict[str, torch.Tensor]) -> None:
        for name, a in self.log_alpha.items():
            a.copy_(values[name])
