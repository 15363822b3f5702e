"""`learned_prune`: structure learned per task to a FLOP target (CoFi-style L0 gates on a ResNet),
then physically compacted and finetuned; the structure can transfer along the stream.

Per task: a **prune** phase (gates and weights train together; the network runs densely and is
charged densely), then **compaction** at `prune_fraction` of the task's planned steps (closed
channels and residual branches are removed, kernel gates become `weight_mask` buffers, the
deterministic gate values are folded into BatchNorm so the function is unchanged), then a
**finetune** phase on the smaller network. The Lagrangian `l1 (s - t) + l2 (s - t)^2` (multipliers
by gradient ascent) drives the expected sparsity s to the target t, ramped from 0 to `sparsity`
over `warmup_fraction` of the prune phase; at compaction the deterministic mask is calibrated by
one shift of all fine log-alphas when it misses the target (short prune phases), so every task's
compacted network keeps (1 - sparsity) of the dense training FLOPs. See docs/learned-prune.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.api.learner import Learner, LearnerConfig, TaskInfo, clone_module, replace_submodule
from nevisbench.api.module import TaskModule
from nevisbench.errors import ConfigError, choice_error
from nevisbench.learners._gates import GateSet, deterministic
from nevisbench.learners._resnet import blocks

__all__ = ["LearnedPruneConfig", "LearnedPruneLearner", "LearnedPruneModule", "TRANSFER_MODES"]

TRANSFER_MODES = ("none", "masks_weights", "masks_only", "weights_only", "single", "multi", "delta")
_CARRY_WEIGHTS = ("masks_weights", "weights_only", "single", "multi", "delta")  # start from task t-1's weights
_CARRY_GATES = ("masks_weights", "masks_only", "single")  # start from task t-1's gates
_REPLAY = ("single", "multi", "delta")  # also train on replayed batches of task t-1 (prune phase)
_FINE_KEEP, _BLOCK_KEEP = 0.5, 0.9  # initial keep rates (CoFi droprate 0.5; block gates start near open)
_TOLERANCE = 0.005  # calibration stops when the compacted FLOP ratio is this close to the target


@dataclass
class LearnedPruneConfig(LearnerConfig):
    name: str = "learned_prune"
    sparsity: float = 0.5  # keep (1 - sparsity) of the dense training FLOPs
    granularity: str = "channel"  # channel | kernel (also one gate per KxK kernel of the 3x3 convs)
    block_gates: bool = True  # one gate per residual branch
    prune_fraction: float = 0.5  # share of the task's steps spent learning the structure
    warmup_fraction: float = 0.5  # share of the prune phase over which the target ramps from 0
    gate_lr: float = 0.1  # learning rate of the log-alphas (same optimizer, own param group)
    lagrange_lr: float = 0.1  # learning rate of the multipliers (gradient ascent)
    transfer: str = "none"  # none | masks_weights | masks_only | weights_only | single | multi | delta
    delta_penalty: float = 0.01  # L2 on the per-task gate offsets (transfer=delta)
    replay_batches: int = 8  # task t-1 batches kept for the replay modes (single, multi, delta)
    distill: bool = False  # MSE to the frozen pretrained backbone's four stage outputs
    distill_weight: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"Invalid value for 'learner.sparsity': {self.sparsity}; it must be in [0, 1)")
        if self.granularity not in ("channel", "kernel"):
            raise choice_error("value for 'learner.granularity':", self.granularity, ("channel", "kernel"))
        if self.transfer not in TRANSFER_MODES:
            raise choice_error("value for 'learner.transfer':", self.transfer, TRANSFER_MODES)
        for key in ("prune_fraction", "warmup_fraction"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {getattr(self, key)}; it must be in (0, 1]")
        for key in ("gate_lr", "lagrange_lr", "delta_penalty", "distill_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {getattr(self, key)}; it must be >= 0")
        if self.replay_batches < 1:
            raise ConfigError(f"Invalid value for 'learner.replay_batches': {self.replay_batches}; it must be >= 1")


# -- the ResNet's gated units ----------------------------------------------------------------------
def _blocks(backbone: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(module path, gate key, block) of every residual block: ('layer1.0', 'layer1_0', block)."""
    return [(f"layer{s + 1}.{i}", f"layer{s + 1}_{i}", block) for s, stage in enumerate(blocks(backbone))
            for i, block in enumerate(stage)]


def _pairs(block: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) attribute names of a residual branch, in order (BasicBlock: 2, Bottleneck: 3)."""
    return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]


def _make_gates(backbone: nn.Module, cfg: LearnedPruneConfig, generator: torch.Generator) -> GateSet:
    """c{i}: the output channels of the branch's conv i (all but the last); k{i}: the KxK kernels of
    a 3x3 conv i (granularity=kernel); block: the residual branch."""
    shapes, keep = {}, {}
    for _, key, block in _blocks(backbone):
        pairs = _pairs(block)
        for i, (conv_name, _) in enumerate(pairs):
            conv = getattr(block, conv_name)
            if i < len(pairs) - 1:
                shapes[f"{key}_c{i}"], keep[f"{key}_c{i}"] = (conv.out_channels,), _FINE_KEEP
            if cfg.granularity == "kernel" and conv.kernel_size == (3, 3) and conv.groups == 1:
                shapes[f"{key}_k{i}"], keep[f"{key}_k{i}"] = (conv.out_channels, conv.in_channels), _FINE_KEEP
        if cfg.block_gates:
            shapes[f"{key}_block"], keep[f"{key}_block"] = (1,), _BLOCK_KEEP
    return GateSet(shapes, keep, generator)


class _Shortcut(nn.Module):
    """A residual block whose branch was removed: relu(shortcut(x))."""

    def __init__(self, downsample: nn.Module | None) -> None:
        super().__init__()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x if self.downsample is None else self.downsample(x))


def _gated_block(block: nn.Module, x: torch.Tensor, z: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    identity = x if block.downsample is None else block.downsample(x)
    pairs, out = _pairs(block), x
    for i, (conv_name, bn_name) in enumerate(pairs):
        conv = getattr(block, conv_name)
        kernels = z.get(f"{key}_k{i}")
        weight = conv.weight if kernels is None else conv.weight * kernels[:, :, None, None]
        out = getattr(block, bn_name)(conv._conv_forward(out, weight, conv.bias))
        if i < len(pairs) - 1:  # the gate multiplies the BatchNorm output, before the ReLU
            out = torch.relu(out * z[f"{key}_c{i}"].view(1, -1, 1, 1))
    if f"{key}_block" in z:
        out = out * z[f"{key}_block"]
    return torch.relu(out + identity)


def _features(backbone: nn.Module, x: torch.Tensor, z: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled features and the four stage outputs; with gate values `z`, the gated network."""
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
    stages = []
    for s, stage in enumerate(blocks(backbone)):
        for i, block in enumerate(stage):
            x = block(x) if z is None or isinstance(block, _Shortcut) else _gated_block(block, x, z, f"layer{s + 1}_{i}")
        stages.append(x)
    return backbone.fc(torch.flatten(backbone.avgpool(x), 1)), stages


class _FlopModel:
    """Dense training FLOPs per image of every conv (from shapes at the run's image size: forward,
    grad-input and grad-weight, 2 per multiply-add; the stem's input needs no gradient) and of the
    head, and the ratio kept when units are open with given probabilities (or 0/1 masks)."""

    def __init__(self, backbone: nn.Module, image_size: int, feature_dim: int, num_classes: int) -> None:
        costs: dict[str, float] = {}

        def hook(name):
            def record(conv, inputs, out):
                forward = 2.0 * conv.out_channels * conv.in_channels // conv.groups * math.prod(conv.kernel_size) * out.shape[-2] * out.shape[-1]
                costs[name] = forward * (2 if name == "conv1" else 3)
            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
        was_training = backbone.training
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, image_size, image_size, device=next(backbone.parameters()).device))
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
        self.blocks = [(key, [costs[f"{path}.{conv}"] for conv, _ in _pairs(block)]) for path, key, block in _blocks(backbone)]
        gated = sum(sum(c) for _, c in self.blocks)
        self.dense = sum(costs.values()) + 6.0 * feature_dim * num_classes
        self.fixed = self.dense - gated  # stem, shortcuts, head

    def ratio(self, open_: dict[str, torch.Tensor]) -> torch.Tensor:
        """Kept fraction of the dense training FLOPs; `open_` maps gate names to P(open) or 0/1."""
        total = torch.zeros((), device=next(iter(open_.values())).device) + self.fixed
        for key, costs in self.blocks:
            branch = 0.0
            for i, cost in enumerate(costs):
                out = open_.get(f"{key}_c{i}") if i < len(costs) - 1 else None
                inp = open_.get(f"{key}_c{i - 1}") if i > 0 else None
                kernels = open_.get(f"{key}_k{i}")
                if kernels is None:
                    kept = (1.0 if out is None else out.mean()) * (1.0 if inp is None else inp.mean())
                else:
                    grid = kernels * (1.0 if out is None else out[:, None]) * (1.0 if inp is None else inp[None, :])
                    kept = grid.mean()
                branch = branch + cost * kept
            block = open_.get(f"{key}_block")
            total = total + branch * (1.0 if block is None else block.sum())
        return total / self.dense


# -- compaction --------------------------------------------------------------------------------------
def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor | None, scale: torch.Tensor | None) -> nn.BatchNorm2d:
    index = torch.arange(bn.num_features, device=bn.weight.device) if keep is None else keep
    new = nn.BatchNorm2d(len(index), eps=bn.eps, momentum=bn.momentum).to(bn.weight.device)
    factor = 1.0 if scale is None else scale  # fold the deterministic gate values into the affine part
    with torch.no_grad():
        new.weight.copy_(bn.weight[index] * factor)
        new.bias.copy_(bn.bias[index] * factor)
        new.running_mean.copy_(bn.running_mean[index])
        new.running_var.copy_(bn.running_var[index])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


@torch.no_grad()
def _compact(backbone: nn.Module, z: dict[str, torch.Tensor]) -> None:
    """Remove closed branches and channels in place; kernel gates become `weight_mask` buffers."""
    for path, key, block in _blocks(backbone):
        gate = z.get(f"{key}_block")
        if gate is not None and float(gate.sum()) == 0:
            replace_submodule(backbone, path, _Shortcut(block.downsample))
            continue
        pairs, keep_in = _pairs(block), None
        for i, (conv_name, bn_name) in enumerate(pairs):
            conv, last = getattr(block, conv_name), i == len(pairs) - 1
            values = None if last else z[f"{key}_c{i}"]
            keep_out = None if last else values.nonzero().flatten()
            kernels = z.get(f"{key}_k{i}")
            weight = conv.weight.detach() if kernels is None else conv.weight.detach() * kernels[:, :, None, None]
            if keep_out is not None:
                weight, kernels = weight[keep_out], None if kernels is None else kernels[keep_out]
            if keep_in is not None:
                weight, kernels = weight[:, keep_in], None if kernels is None else kernels[:, keep_in]
            new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                            bias=conv.bias is not None).to(weight.device)
            fmt = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[1] > 1 else torch.contiguous_format
            new.weight.data = weight.contiguous(memory_format=fmt)
            if conv.bias is not None:
                new.bias.data = conv.bias.detach()[keep_out] if keep_out is not None else conv.bias.detach().clone()
            if kernels is not None:
                prune.custom_from_mask(new, "weight", (kernels != 0).to(weight.dtype)[:, :, None, None].expand_as(weight).contiguous(memory_format=fmt))
            scale = gate if last else values[keep_out]
            setattr(block, conv_name, new)
            setattr(block, bn_name, _slice_bn(getattr(block, bn_name), keep_out, None if scale is None else scale.view(-1)))
            keep_in = keep_out


@torch.no_grad()
def _merge_into(dense: nn.Module, compacted: nn.Module, z: dict[str, torch.Tensor]) -> None:
    """Write the compacted network's tensors into the dense-shaped `dense` at the kept positions;
    removed units keep `dense`'s values (their weights at compaction)."""
    kept = {key: [z[f"{key}_c{i}"].nonzero().flatten().cpu() for i in range(len(_pairs(b)) - 1)]
            for _, key, b in _blocks(dense)}
    source = {k.removesuffix("_orig"): v.detach().cpu() for k, v in compacted.state_dict().items() if not k.endswith("_mask")}
    for name, target in dense.state_dict().items():
        value = source.get(name)
        if value is None:
            continue  # a removed branch
        if value.shape == target.shape:
            target.copy_(value)
            continue
        path, _, _ = name.rpartition(".")
        block_path, _, attr = path.rpartition(".")
        i, key = int(attr[-1]) - 1, block_path.replace(".", "_")
        out = kept[key][i] if i < len(kept[key]) else torch.arange(target.shape[0])
        if target.dim() == 4:
            inp = kept[key][i - 1] if i > 0 else torch.arange(target.shape[1])
            target[out[:, None], inp[None, :]] = value.to(target.dtype)
        else:
            target[out] = value.to(target.dtype)


def _unit_mask(z: dict[str, torch.Tensor]) -> torch.Tensor:
    """Kept inner channels of the whole network, as one bool vector (a removed branch keeps none)."""
    parts = []
    for name in (k for k in z if re.search(r"_c\d$", k)):
        block = z.get(name.rpartition("_")[0] + "_block")
        parts.append((z[name] != 0) & (block is None or bool(block.sum() != 0)))
    return torch.cat(parts).cpu()


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard overlap of two unit masks."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


# -- the task module ---------------------------------------------------------------------------------
class LearnedPruneModule(TaskModule):
    """TaskModule with gates, the Lagrangian, in-training compaction and optional replay/distillation."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task, train, cfg: LearnedPruneConfig, flops: _FlopModel,
                 gates: GateSet, prev_gates: GateSet | None, carried_gates: bool, seed: int,
                 replay: list[tuple[torch.Tensor, torch.Tensor]] | None, replay_head: nn.Module | None,
                 replay_multi_label: bool, teacher: nn.Module | None) -> None:
        super().__init__(backbone, head, task=task, train=train, frozen=[teacher] if teacher is not None else None)
        self.cfg, self.flops = cfg, flops
        self.gates, self.prev_gates, self.replay_head, self.teacher = gates, prev_gates, replay_head, teacher
        self.lagrange = nn.Parameter(torch.zeros(2))
        self.carried_gates = carried_gates
        self.replay = replay or []
        self.replay_loss = nn.BCEWithLogitsLoss() if replay_multi_label else nn.CrossEntropyLoss()
        self.record_batches = cfg.replay_batches if cfg.transfer in _REPLAY else 0
        self.reservoir: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.phase, self.boundary, self.seen = "prune", None, 0
        self.z: dict[str, torch.Tensor] | None = None  # the calibrated deterministic gates, once compacted
        self.record: dict[str, Any] = {}
        self._noise = torch.Generator().manual_seed(seed)  # gate noise and reservoir draws: checkpointed
        self._snapshot: list[nn.Module] = []  # the dense backbone at compaction (hidden from nn.Module)
        self._eval_gates: tuple[int, dict[str, torch.Tensor]] | None = None

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phase == "finetune":
            return self.head(self.backbone(x))
        step = self.trainer.global_step if self._trainer is not None else -1
        if self._eval_gates is None or self._eval_gates[0] != step:  # deterministic gates (CoFi's evaluation)
            self._eval_gates = (step, {n: deterministic(a) for n, a in self.gates.log_alpha.items()})
        return self.head(_features(self.backbone, x, self._eval_gates[1])[0])

    def _target(self) -> float:
        if self.carried_gates:
            return self.cfg.sparsity  # transferred gates are at the target already: no ramp
        if self.boundary is None:
            return 0.0
        ramp = max(1.0, self.cfg.warmup_fraction * self.boundary)
        return self.cfg.sparsity * min(1.0, self.trainer.global_step / ramp)

    def _lagrangian(self, gates: GateSet) -> tuple[torch.Tensor, torch.Tensor]:
        expected = 1.0 - self.flops.ratio(gates.probs())
        gap = expected - self._target()
        return self.lagrange[0] * gap + self.lagrange[1] * gap * gap, expected

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        pruning = self.phase == "prune"
        if pruning and self.record_batches:
            self._remember(x, y)
        feats, stages = _features(self.backbone, x, self.gates.sample(self._noise) if pruning else None)
        logits = self.head(feats)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self.log("train/loss", loss, prog_bar=True)
        if pruning:
            penalty, expected = self._lagrangian(self.gates)
            loss = loss + penalty
            self.log_dict({"prune/expected_sparsity": expected.detach(), "prune/target": self._target(),
                           "prune/lambda1": self.lagrange[0].detach(), "prune/lambda2": self.lagrange[1].detach()})
            if self.replay:  # task t-1's batches (charged: they run inside the training step)
                rx, ry = self.replay[self.trainer.global_step % len(self.replay)]
                rx, ry = rx.to(x.device, x.dtype), ry.to(y.device)
                replay_gates = self.prev_gates if self.prev_gates is not None else self.gates
                rlogits = self.replay_head(_features(self.backbone, rx, replay_gates.sample(self._noise))[0])
                loss = loss + self.replay_loss(rlogits, ry.to(rlogits.dtype) if rlogits.shape == ry.shape else ry)
                if self.prev_gates is not None:
                    loss = loss + self._lagrangian(self.prev_gates)[0]
        else:
            self.log("prune/achieved_sparsity", self.record["achieved_sparsity"])
        if self.teacher is not None:
            with torch.no_grad():
                _, targets = _features(self.teacher, x)
            loss = loss + self.cfg.distill_weight * sum(F.mse_loss(s, t) for s, t in zip(stages, targets)) / len(stages)
        return loss

    def _remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Reservoir sampling of this task's training batches (for the next task's replay)."""
        self.seen += 1
        full = len(self.reservoir) >= self.record_batches
        slot = int(torch.randint(self.seen, (1,), generator=self._noise)) if full else len(self.reservoir)
        if slot >= self.record_batches:
            return  # not kept: no copy off the device
        item = (x.detach().cpu().clone(), y.detach().cpu().clone())
        if full:
            self.reservoir[slot] = item
        else:
            self.reservoir.append(item)

    # -- optimisation ------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        special = {id(p) for p in self._gate_parameters()} | {id(self.lagrange)}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in special]

    def _gate_parameters(self) -> list[nn.Parameter]:
        sets = [self.gates] + ([self.prev_gates] if self.prev_gates is not None else [])
        return [p for s in sets for p in s.parameters()]

    def configure_optimizers(self) -> Any:
        groups = [{"params": self.trainable_parameters()}]
        if self.phase == "prune":
            groups += [{"params": self._gate_parameters(), "lr": self.cfg.gate_lr, "weight_decay": 0.0},
                       {"params": [self.lagrange], "lr": self.cfg.lagrange_lr, "weight_decay": 0.0}]
        return self.optimization(groups)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.lagrange.grad is not None:
            self.lagrange.grad.neg_()  # the multipliers are maximised: gradient ascent

    def on_train_start(self) -> None:
        # resumed from a checkpoint written at the boundary step, before the compaction ran
        if self.phase == "prune" and self.boundary is not None and self.trainer.global_step >= self.boundary:
            self._compact_now()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.phase != "prune":
            return
        # right after the step, so a checkpoint written at this step's end already holds these
        self.gates.clamp_()
        if self.prev_gates is not None:
            self.prev_gates.clamp_()
            if self.cfg.transfer == "delta":
                self._shrink_offsets()
        if self.boundary is None:  # the plan is known once step 0 ran (a FLOP budget decides it there)
            from nevisbench.api.schedule import planned_steps

            total = planned_steps(self.trainer) or self.trainer.max_steps
            self.boundary = 1 if total <= 1 else min(total - 1, max(1, round(self.cfg.prune_fraction * total)))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # after the checkpoint callback: a checkpoint of the boundary step holds the pre-compaction
        # state, and on_train_start compacts when resuming from it
        if self.phase == "prune" and self.boundary is not None and self.trainer.global_step >= self.boundary:
            self._compact_now()

    def on_train_end(self) -> None:
        if self.phase == "prune":  # stopped before the boundary: evaluate the compacted network anyway
            self._compact_now(rebuild_optimizer=False)

    @torch.no_grad()
    def _shrink_offsets(self) -> None:
        """transfer=delta: per-task gates = base + offset, base the mean of the task gates (the
        minimiser of the penalty over the base); the proximal step of `delta_penalty` * |offset|^2
        at the gates' current learning rate. Penalty 0 is exactly `multi`; a large one ties the sets."""
        lr = self.trainer.optimizers[0].param_groups[1]["lr"]
        shrink = 1.0 / (1.0 + 2.0 * lr * self.cfg.delta_penalty)
        for a, b in zip(self.gates.log_alpha.values(), self.prev_gates.log_alpha.values()):
            base = (a + b) / 2
            a.copy_(base + (a - base) * shrink)
            b.copy_(base + (b - base) * shrink)

    # -- compaction --------------------------------------------------------------------------------
    def calibrated(self, gates: GateSet) -> tuple[dict[str, torch.Tensor], float]:
        """The deterministic gates, shifted (all fine log-alphas by one constant) until the
        compacted network keeps (1 - sparsity) of the dense training FLOPs; and the shift."""
        target = 1.0 - self.cfg.sparsity
        alphas = {n: a.detach() for n, a in gates.log_alpha.items()}

        def at(shift: float) -> tuple[dict[str, torch.Tensor], float]:
            z = {n: deterministic(a if n.endswith("_block") else a + shift) for n, a in alphas.items()}
            return z, float(self.flops.ratio({n: (v != 0).float() for n, v in z.items()}))

        best = (*at(0.0), 0.0)
        low, high = -30.0, 30.0
        while abs(best[1] - target) > _TOLERANCE and high - low > 1e-4:
            mid = (low + high) / 2
            z, ratio = at(mid)
            if abs(ratio - target) < abs(best[1] - target):
                best = (z, ratio, mid)
            low, high = (low, mid) if ratio > target else (mid, high)
        return best[0], best[2]

    def _compact_now(self, *, rebuild_optimizer: bool = True) -> None:
        z, shift = self.calibrated(self.gates)
        expected = float(1.0 - self.flops.ratio(self.gates.probs()).detach())
        self._snapshot = [clone_module(self.backbone).cpu()]
        self._restructure(z)
        kept = {path: [int((z[f"{key}_c{i}"] != 0).sum()) for i in range(len(_pairs(b)) - 1)]
                for path, key, b in _blocks(self._snapshot[0])}
        removed = [path for path, _, b in _blocks(self.backbone) if isinstance(b, _Shortcut)]
        self.record = {
            "target_sparsity": self.cfg.sparsity,
            "achieved_sparsity": 1.0 - float(self.flops.ratio({n: (v != 0).float() for n, v in z.items()})),
            "expected_sparsity": expected, "calibration_shift": shift, "compaction_step": self._trainer.global_step if self._trainer is not None else 0,
            "kept_channels": {p: k for p, k in kept.items() if p not in removed}, "removed_blocks": removed,
            "joint_overlap": None,
        }
        if self.cfg.granularity == "kernel":
            masks = [(n, m.weight_mask) for n, m in self.backbone.named_modules() if hasattr(m, "weight_mask")]
            self.record["kernel_density"] = {n: float(m.mean()) for n, m in masks}
        if self.prev_gates is not None:  # multi / delta: the replayed task's gates, compacted alike
            self.record["joint_overlap"] = _overlap(_unit_mask(z), _unit_mask(self.calibrated(self.prev_gates)[0]))
        if rebuild_optimizer:
            self._rebuild_optimizer()

    def _restructure(self, z: dict[str, torch.Tensor]) -> None:
        _compact(self.backbone, z)
        self.z, self.phase, self._eval_gates = z, "finetune", None
        for p in [*self._gate_parameters(), self.lagrange]:
            p.requires_grad_(False)

    def _rebuild_optimizer(self) -> None:
        """A new optimizer for the compacted parameters (fresh state); the LR schedule continues."""
        trainer = self.trainer
        step = trainer.global_step
        trainer.strategy.setup_optimizers(trainer)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.last_epoch = step
            rates = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for group, rate in zip(scheduler.optimizer.param_groups, rates):
                group["lr"] = rate
            scheduler._last_lr = rates

    def unit_mask(self) -> torch.Tensor:
        return _unit_mask(self.z)

    def decompact(self) -> nn.Module:
        """The dense-shaped backbone with the finetuned weights at the kept units (the others as at
        compaction); it replaces `self.backbone` so the continual scenario carries a dense network."""
        dense = self._snapshot[0]
        _merge_into(dense, self.backbone, self.z)
        self.backbone = dense
        return dense

    # -- resume ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["learned_prune"] = {
            "phase": self.phase, "boundary": self.boundary, "seen": self.seen, "noise": self._noise.get_state(),
            "reservoir": [list(item) for item in self.reservoir], "record": self.record,
            "z": None if self.z is None else {n: v.cpu() for n, v in self.z.items()},
            "snapshot": self._snapshot[0].state_dict() if self._snapshot else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["learned_prune"]
        self.boundary, self.seen, self.record = state["boundary"], state["seen"], state["record"]
        self._noise.set_state(state["noise"])
        self.reservoir = [tuple(item) for item in state["reservoir"]]
        if state["phase"] == "finetune":  # rebuild the compacted structure; Lightning loads its weights next
            snapshot = clone_module(self.backbone).cpu()
            snapshot.load_state_dict(state["snapshot"])
            self._snapshot = [snapshot]
            self._restructure({n: v.to(self.lagrange.device) for n, v in state["z"].items()})


# -- the learner -------------------------------------------------------------------------------------
class LearnedPruneLearner(Learner):
    Config = LearnedPruneConfig
    backbone_families = ("resnet",)  # its gates are ResNet's residual blocks (layer1..layer4)
    supports_ddp = False  # compaction rebuilds the convolutions mid-fit

    def __init__(self, config: LearnedPruneConfig, context) -> None:
        super().__init__(config, context)
        self.history: list[dict[str, Any]] = []  # one structure record per finished task
        self.previous: dict[str, Any] | None = None  # what task t-1 hands to task t
        self._pretrained: nn.Module | None = None

    def prepare(self, backbone: nn.Module) -> nn.Module:
        blocks(backbone)  # a clear error for a backbone that is not a torchvision ResNet
        self._pretrained = clone_module(backbone)  # for masks_only and the distillation teacher
        return backbone

    def begin_task(self, task, backbone: nn.Module) -> LearnedPruneModule:
        cfg, prev, mode = self.config, self.previous, self.config.transfer
        pretrained = self._pretrained if self._pretrained is not None else clone_module(backbone)
        if prev is not None and mode in _CARRY_WEIGHTS:
            backbone.load_state_dict(prev["backbone"])
        elif prev is not None and mode == "masks_only":
            backbone.load_state_dict(pretrained.state_dict())
        generator = torch.Generator().manual_seed(self.context.seed * 1000 + task.index)
        gates = _make_gates(backbone, cfg, generator)
        carried = prev is not None and mode in _CARRY_GATES
        if carried:
            gates.load_values(prev["gates"])
        prev_gates = replay = replay_head = None
        if prev is not None and mode in _REPLAY:
            replay = list(zip(prev["replay_x"], prev["replay_y"]))
            replay_head = nn.Linear(self.feature_dim, prev["num_classes"])
            replay_head.load_state_dict(prev["head"])
            if mode in ("multi", "delta"):
                prev_gates = _make_gates(backbone, cfg, generator)
                prev_gates.load_values(prev["gates"])
        flops = _FlopModel(backbone, self.context.image_size, self.feature_dim, task.num_classes)
        return LearnedPruneModule(
            backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train, cfg=cfg,
            flops=flops, gates=gates, prev_gates=prev_gates, carried_gates=carried, seed=self.context.seed * 1000 + task.index,
            replay=replay, replay_head=replay_head, replay_multi_label=bool(prev and prev.get("multi_label")),
            teacher=clone_module(pretrained) if cfg.distill else None)

    def end_task(self, task, module: LearnedPruneModule) -> None:
        mask = module.unit_mask()
        record = {"task": task.key, **module.record,
                  "overlap_prev": None if self.previous is None else _overlap(mask, self.previous["mask"])}
        self.history.append(record)
        dense = module.decompact().cpu()
        prev: dict[str, Any] = {"task": task.key, "gates": module.gates.values(), "mask": mask}
        if self.config.transfer in _CARRY_WEIGHTS:
            prev["backbone"] = {k: v.detach().clone() for k, v in dense.state_dict().items()}
        if self.config.transfer in _REPLAY:
            prev["replay_x"] = [x for x, _ in module.reservoir]
            prev["replay_y"] = [y for _, y in module.reservoir]
            prev["head"] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
            prev["num_classes"], prev["multi_label"] = task.num_classes, task.multi_label
        self.previous = prev

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """The structure learned on `task` (the latest finished task), for its results line."""
        return dict(self.history[-1]) if self.history else {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.previous = state.get("previous")
