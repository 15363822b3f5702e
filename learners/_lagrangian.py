"""learned_prune's control of the structure: the target ramp, the Lagrangian, the structure's own
optimizer (log-alphas and multipliers, independent of the model's optimizer and LR schedule) and
the final calibration of the deterministic mask. See docs/learned-prune.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nevisbench.learners._gates import deterministic
from nevisbench.learners._structure import BlockUnits, FlopModel, Gates, binary, fine_names

__all__ = ["ramp", "penalty", "structure_optimizer", "gates_at", "Calibration", "calibrate", "tolerance"]

L2_RATE = 30.0  # l2's LR over l1's
_SEARCH = (-30.0, 30.0)  # calibration shifts searched (log-alphas are clamped to [-4.6, 4.6])


def ramp(step: int, start: float, target: float, length: float) -> float:
    """The target sparsity at `step`: linear from `start` (the initial expected sparsity) to
    `target` over `length` steps, then flat."""
    return start + (target - start) * min(1.0, step / max(1.0, length))


def penalty(flops: FlopModel, probs: Gates, l1: torch.Tensor, l2: torch.Tensor, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CoFi's Lagrangian l1 (s - t) + l2 (s - t)^2 and the expected sparsity s."""
    expected = 1.0 - flops.ratio(probs)
    gap = expected - target
    return l1 * gap + l2 * gap * gap, expected


def structure_optimizer(alphas: list[nn.Parameter], lambda1: nn.Parameter, lambda2: nn.Parameter, gate_lr: float,
                        lagrange_lr: float) -> torch.optim.Optimizer:
    """Adam over the log-alphas and, maximising (gradient ascent), over the multipliers; constant
    LRs, so the model's schedule never touches them. Adam's per-parameter normalisation gives
    channel, kernel and block gates the same step size although ds/dlog-alpha differs ~30x between
    them (CoFi uses AdamW for both too). No momentum (beta1 = 0): momentum delays the Lagrangian's
    feedback and the expected sparsity overshoots. l2 ascends `L2_RATE` times faster than l1: its
    term 2 l2 (s - t) is the proportional action that stops l1's wind-up during the ramp from
    carrying s past the target (docs/learned-prune.md)."""
    return torch.optim.Adam([{"params": alphas, "lr": gate_lr, "betas": (0.0, 0.99)},
                             {"params": [lambda1], "lr": lagrange_lr, "betas": (0.0, 0.9), "maximize": True},
                             {"params": [lambda2], "lr": L2_RATE * lagrange_lr, "betas": (0.0, 0.9), "maximize": True}])


def tolerance(target_keep: float) -> float:
    """How close the compacted FLOP ratio must come to the kept fraction: 0.005, or 2% of it."""
    return min(0.005, 0.02 * target_keep)


def finalize(z: Gates, alphas: Gates, units: list[BlockUnits]) -> Gates:
    """No conv is left with 0 output channels: a branch one of whose channel groups closed
    entirely is removed (its block gate closes) when it has a block gate, and otherwise keeps the
    group's highest unit."""
    for b in units:
        for name in b.channel:
            if bool(z[name].any()):
                continue
            if b.block is not None:
                z[b.block] = torch.zeros_like(z[b.block])
                break
            z[name] = deterministic(alphas[name], keep=1)
    return z


def gates_at(alphas: Gates, units: list[BlockUnits], shift: float) -> Gates:
    """The deterministic gates with every channel and kernel group counted at `log_alpha + shift`
    (block gates keep their decision); kept units have the soft values of the unshifted alphas."""
    fine = fine_names(units)
    z = {n: deterministic(a, shift=shift if n in fine else 0.0) for n, a in alphas.items()}
    return finalize(z, alphas, units)


@dataclass
class Calibration:
    z: Gates  # the deterministic gates at `shift`
    shift: float  # 0 when the learned gates already meet the target
    ratio: float  # kept fraction of the dense training FLOPs
    warning: str | None  # set when the ratio misses the target by more than the tolerance


def calibrate(alphas: Gates, units: list[BlockUnits], flops: FlopModel, sparsity: float) -> Calibration:
    """The deterministic gates, every fine log-alpha shifted by one constant (bisection) until the
    compacted network keeps (1 - sparsity) of the dense training FLOPs, within `tolerance`."""
    target = 1.0 - sparsity
    tol = tolerance(target)

    def at(shift: float) -> tuple[Gates, float]:
        z = gates_at(alphas, units, shift)
        return z, float(flops.ratio(binary(z)))

    best = (*at(0.0), 0.0)
    low, high = _SEARCH
    while abs(best[1] - target) > tol and high - low > 1e-4:
        mid = (low + high) / 2
        z, ratio = at(mid)
        if abs(ratio - target) < abs(best[1] - target):
            best = (z, ratio, mid)
        low, high = (low, mid) if ratio > target else (mid, high)
    z, ratio, shift = best
    return Calibration(z, shift, ratio, None if abs(ratio - target) <= tol else _explain(at, ratio, target, sparsity))


def _explain(at, ratio: float, target: float, sparsity: float) -> str:
    floor = at(_SEARCH[0])[1]
    why = (f"the ungated stem, shortcuts and head (and one unit per kept group) keep {floor:.4f} of dense"
           if floor > target else "one unit more or less changes the cost by more than the tolerance")
    return f"target sparsity {sparsity} not reached: compacted cost {ratio:.4f} of dense against {target:.4f}; {why}"
