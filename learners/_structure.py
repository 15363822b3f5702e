"""learned_prune's view of a ResNet: which units carry gates (kept as data, `BlockUnits`), the
gated forward pass, the FLOP model of a gated network, compaction to the kept units and the way
back to the dense shape. See docs/learned-prune.md."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.api.learner import replace_submodule
from nevisbench.learners._gates import GateSet
from nevisbench.learners._resnet import blocks

__all__ = ["BlockUnits", "layout", "make_gates", "Shortcut", "features", "FlopModel", "compact", "merge_into",
           "unit_mask", "overlap", "binary"]

FINE_KEEP, BLOCK_KEEP = 0.5, 0.9  # initial keep rates (CoFi droprate 0.5; block gates start near open)
Gates = dict[str, torch.Tensor]  # gate name -> values (samples, probabilities, 0/1 or soft masks)


@dataclass(frozen=True)
class BlockUnits:
    """The gated units of one residual block. Gate names are made here once and only looked up
    through these fields (never parsed back)."""

    path: str  # module path in the backbone: "layer1.0"
    convs: tuple[str, ...]  # the branch's conv attributes, in order (BasicBlock: 2, Bottleneck: 3)
    bns: tuple[str, ...]  # the BatchNorm after each conv
    channel: tuple[str, ...]  # gate group of the output channels of every conv but the last
    kernel: tuple[str | None, ...]  # per conv: gate group of its KxK kernels (granularity=kernel), or None
    block: str | None  # gate of the whole residual branch (block_gates=true), or None

    def channels_in(self, i: int) -> str | None:
        """The gate group of conv i's input channels (None: the block input, never gated)."""
        return self.channel[i - 1] if i > 0 else None

    def channels_out(self, i: int) -> str | None:
        """The gate group of conv i's output channels (None for the last conv: the block output)."""
        return self.channel[i] if i < len(self.channel) else None


def layout(backbone: nn.Module, granularity: str, block_gates: bool) -> list[BlockUnits]:
    """The gated units of every residual block of a torchvision ResNet."""
    found = []
    for s, stage in enumerate(blocks(backbone)):
        for b, block in enumerate(stage):
            path, key = f"layer{s + 1}.{b}", f"layer{s + 1}_{b}"
            convs = tuple(f"conv{i}" for i in (1, 2, 3) if hasattr(block, f"conv{i}"))
            kernel = tuple(f"{key}_k{i}" if granularity == "kernel" and getattr(block, c).kernel_size == (3, 3)
                           and getattr(block, c).groups == 1 else None for i, c in enumerate(convs))
            found.append(BlockUnits(path, convs, tuple(c.replace("conv", "bn") for c in convs),
                                    tuple(f"{key}_c{i}" for i in range(len(convs) - 1)), kernel,
                                    f"{key}_block" if block_gates else None))
    return found


def make_gates(backbone: nn.Module, units: list[BlockUnits], generator: torch.Generator) -> GateSet:
    """One gate group per channel group, kernel grid and branch, at the initial keep rates."""
    shapes: dict[str, tuple[int, ...]] = {}
    keep: dict[str, float] = {}
    for b in units:
        block = backbone.get_submodule(b.path)
        for i, conv_name in enumerate(b.convs):
            conv = getattr(block, conv_name)
            if b.channels_out(i) is not None:
                shapes[b.channel[i]], keep[b.channel[i]] = (conv.out_channels,), FINE_KEEP
            if (k := b.kernel[i]) is not None:
                shapes[k], keep[k] = (conv.out_channels, conv.in_channels), FINE_KEEP
        if b.block is not None:
            shapes[b.block], keep[b.block] = (1,), BLOCK_KEEP
    return GateSet(shapes, keep, generator)


def fine_names(units: list[BlockUnits]) -> set[str]:
    """The channel and kernel groups (what calibration shifts; block gates keep their decision)."""
    return {n for b in units for n in (*b.channel, *b.kernel) if n is not None}


def _lookup(z: Gates, name: str | None) -> torch.Tensor | None:
    """The values of gate `name` in `z`; None for a unit without a gate or a gate not in `z`."""
    return None if name is None else z.get(name)


def binary(z: Gates) -> Gates:
    return {n: (v != 0).float() for n, v in z.items()}


class Shortcut(nn.Module):
    """A residual block whose branch was removed: relu(shortcut(x))."""

    def __init__(self, downsample: nn.Module | None) -> None:
        super().__init__()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x if self.downsample is None else self.downsample(x))


def _gated_block(block: nn.Module, b: BlockUnits, x: torch.Tensor, z: Gates) -> torch.Tensor:
    downsample = cast("nn.Module | None", block.downsample)
    identity = x if downsample is None else downsample(x)
    out = x
    for i, (conv_name, bn_name) in enumerate(zip(b.convs, b.bns, strict=False)):
        conv = getattr(block, conv_name)
        kernels = _lookup(z, b.kernel[i])
        weight = conv.weight if kernels is None else conv.weight * kernels[:, :, None, None]
        out = getattr(block, bn_name)(conv._conv_forward(out, weight, conv.bias))
        if b.channels_out(i) is not None:  # the gate multiplies the BatchNorm output, before the ReLU
            out = torch.relu(out * z[b.channel[i]].view(1, -1, 1, 1))
    if b.block is not None:
        out = out * z[b.block]
    return torch.relu(out + identity)


def features(backbone: nn.Module, units: list[BlockUnits], x: torch.Tensor,
             z: Gates | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled features and the four stage outputs; with gate values `z`, the gated network."""
    net = cast(Any, backbone)  # a torchvision ResNet's layout (`blocks` checks it)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    stages, index = [], 0
    for stage in blocks(backbone):
        for block in stage:
            b = units[index]
            index += 1
            x = block(x) if z is None or isinstance(block, Shortcut) else _gated_block(block, b, x, z)
        stages.append(x)
    return net.fc(torch.flatten(net.avgpool(x), 1)), stages


class FlopModel:
    """Dense training FLOPs per image of every conv (from shapes at the run's image size: forward,
    grad-input and grad-weight, 2 per multiply-add; the stem's input needs no gradient) and of the
    head, and the ratio kept when units are open with given probabilities (or 0/1 masks)."""

    def __init__(self, backbone: nn.Module, units: list[BlockUnits], image_size: int, feature_dim: int,
                 num_classes: int) -> None:
        costs: dict[str, float] = {}

        def hook(name):
            def record(conv, inputs, out):
                forward = (
                    2.0 * conv.out_channels * conv.in_channels // conv.groups * math.prod(conv.kernel_size) * out.shape[-2] * out.shape[-1]
                )
                costs[name] = forward * (2 if name == "conv1" else 3)

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
        was_training = backbone.training
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, image_size, image_size, device=next(backbone.parameters()).device))
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
        self.units = units
        self.costs = [[costs[f"{b.path}.{conv}"] for conv in b.convs] for b in units]
        self.dense = sum(costs.values()) + 6.0 * feature_dim * num_classes
        self.fixed = self.dense - sum(sum(c) for c in self.costs)  # stem, shortcuts, head

    def ratio(self, open_: Gates) -> torch.Tensor:
        """Kept fraction of the dense training FLOPs; `open_` maps gate names to P(open) or 0/1."""
        total = torch.zeros((), device=next(iter(open_.values())).device) + self.fixed
        for b, costs in zip(self.units, self.costs, strict=False):
            branch: float | torch.Tensor = 0.0
            for i, cost in enumerate(costs):
                out, inp, kernels = _lookup(open_, b.channels_out(i)), _lookup(open_, b.channels_in(i)), _lookup(open_, b.kernel[i])
                if kernels is None:
                    kept = (1.0 if out is None else out.mean()) * (1.0 if inp is None else inp.mean())
                else:
                    grid = kernels * (1.0 if out is None else out[:, None]) * (1.0 if inp is None else inp[None, :])
                    kept = grid.mean()
                branch = branch + cost * kept
            gate = open_.get(b.block) if b.block is not None else None
            total = total + branch * (1.0 if gate is None else gate.sum())
        return total / self.dense


# -- compaction --------------------------------------------------------------------------------------
def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor | None, scale: torch.Tensor | None) -> nn.BatchNorm2d:
    index = torch.arange(bn.num_features, device=bn.weight.device) if keep is None else keep
    new = nn.BatchNorm2d(len(index), eps=bn.eps, momentum=bn.momentum).to(bn.weight.device)
    factor = 1.0 if scale is None else scale  # fold the deterministic gate values into the affine part
    if (bn.running_mean is None or bn.running_var is None or bn.num_batches_tracked is None or new.running_mean is None
            or new.running_var is None or new.num_batches_tracked is None):
        raise ValueError(f"learned_prune needs BatchNorm running statistics, {bn} tracks none")
    with torch.no_grad():
        new.weight.copy_(bn.weight[index] * factor)
        new.bias.copy_(bn.bias[index] * factor)
        new.running_mean.copy_(bn.running_mean[index])
        new.running_var.copy_(bn.running_var[index])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, keep_out: torch.Tensor | None,
              kernels: torch.Tensor | None) -> nn.Conv2d:
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                    bias=conv.bias is not None).to(weight.device)  # (torch types Conv2d's attributes wider than its arguments)
    nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[1] > 1
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    new.weight.data = weight.contiguous(memory_format=fmt)
    if conv.bias is not None and new.bias is not None:
        new.bias.data = conv.bias.detach()[keep_out] if keep_out is not None else conv.bias.detach().clone()
    if kernels is not None:
        mask = (kernels != 0).to(weight.dtype)[:, :, None, None].expand_as(weight).contiguous(memory_format=fmt)
        prune.custom_from_mask(new, "weight", mask)
    return new


@torch.no_grad()
def compact(backbone: nn.Module, units: list[BlockUnits], z: Gates) -> None:
    """Remove closed branches and channels in place; kernel gates become `weight_mask` buffers.
    Every kept branch must keep at least one channel per group (`_lagrangian.finalize` sees to it)."""
    for b in units:
        block = backbone.get_submodule(b.path)
        gate = z.get(b.block) if b.block is not None else None
        if gate is not None and float(gate.sum()) == 0:
            replace_submodule(backbone, b.path, Shortcut(cast("nn.Module | None", block.downsample)))
            continue
        keep_in = None
        for i, (conv_name, bn_name) in enumerate(zip(b.convs, b.bns, strict=False)):
            conv = getattr(block, conv_name)
            values = z[b.channel[i]] if b.channels_out(i) is not None else None
            keep_out = None if values is None else values.nonzero().flatten()
            kernels = _lookup(z, b.kernel[i])
            weight = conv.weight.detach() if kernels is None else conv.weight.detach() * kernels[:, :, None, None]
            if keep_out is not None:
                weight, kernels = weight[keep_out], None if kernels is None else kernels[keep_out]
            if keep_in is not None:
                weight, kernels = weight[:, keep_in], None if kernels is None else kernels[:, keep_in]
            setattr(block, conv_name, _new_conv(conv, weight, keep_out, kernels))
            scale = gate if values is None else values[keep_out]
            setattr(block, bn_name, _slice_bn(getattr(block, bn_name), keep_out, None if scale is None else scale.view(-1)))
            keep_in = keep_out


@torch.no_grad()
def merge_into(dense: nn.Module, compacted: nn.Module, units: list[BlockUnits], z: Gates) -> None:
    """Write the compacted network's tensors into the dense-shaped `dense` at the kept positions;
    removed units keep `dense`'s values (their weights at compaction)."""
    index: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}  # tensor name -> (rows, cols)
    for b in units:
        for i, (conv, bn) in enumerate(zip(b.convs, b.bns, strict=False)):
            out = z[b.channel[i]].nonzero().flatten().cpu() if b.channels_out(i) is not None else None
            inp = z[b.channel[i - 1]].nonzero().flatten().cpu() if b.channels_in(i) is not None else None
            index[f"{b.path}.{conv}.weight"] = (out, inp)
            index[f"{b.path}.{conv}.bias"] = (out, None)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                index[f"{b.path}.{bn}.{attr}"] = (out, None)
    source = {k.removesuffix("_orig"): v.detach().cpu() for k, v in compacted.state_dict().items() if not k.endswith("_mask")}
    for name, target in dense.state_dict().items():
        value = source.get(name)
        if value is None:
            continue  # a removed branch
        if value.shape == target.shape:
            target.copy_(value)
            continue
        out, inp = index[name]
        rows = torch.arange(target.shape[0]) if out is None else out
        if target.dim() == 4:
            cols = torch.arange(target.shape[1]) if inp is None else inp
            target[rows[:, None], cols[None, :]] = value.to(target.dtype)
        else:
            target[rows] = value.to(target.dtype)


def unit_mask(units: list[BlockUnits], z: Gates) -> torch.Tensor:
    """Kept inner channels of the whole network, as one bool vector (a removed branch keeps none)."""
    parts = []
    for b in units:
        branch_open = b.block is None or bool(z[b.block].sum() != 0)
        parts += [(z[name] != 0) & branch_open for name in b.channel]
    return torch.cat(parts).cpu()


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard overlap of two unit masks."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
