"""`conv_prune`: convolution-filter (kernel-level) structured pruning.

`impl=masked` (default, exact paper semantics): for every output channel keep the (1 - sparsity)
fraction of its KxK input kernels with the largest L1 norm (or random ones); the others are masked
to zero. Exact, but masked convs run densely: algorithmic FLOPs fall, executed FLOPs do not.

`impl=grouped` (runs faster, a DIFFERENT sparsity pattern): the output channels of each conv are
split into `groups` contiguous groups, and each group reads one shared subset of (1 - sparsity) of
the input channels, chosen by the group's summed kernel norms. The layer gathers those inputs and
runs one ordinary (grouped) convolution, so it really executes (1 - sparsity) of the dense FLOPs.
Kernels are kept per group, not per output channel. With `groups=1` (default) this is a per-layer
input-channel selection followed by a dense conv: on a 2-core CPU a ResNet50 training step took
0.67x dense, while groups=2 and 4 took 1.08x and 1.30x (oneDNN's grouped convs are slow); GPU
figures are pending. The stem (3 input channels) stays dense in this mode. (Gather + grouped conv
with groups = Cout is never used: it measured 6-111x slower than dense.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench.errors import ConfigError, choice_error
from nevisbench.api.learner import Learner, replace_submodule
from nevisbench.learners._pruning import PruneConfig, scores
from nevisbench.learners._resnet import block_convs

__all__ = ["ConvPruneConfig", "ConvPruneLearner", "GroupSharedConv"]


@dataclass
class ConvPruneConfig(PruneConfig):
    name: str = "conv_prune"
    impl: str = "masked"  # masked | grouped
    groups: int = 1  # output-channel groups of impl=grouped (1: fastest measured on CPU)

    def validate(self) -> None:
        super().validate()
        if self.impl not in ("masked", "grouped"):
            raise choice_error("value for 'learner.impl':", self.impl, ("masked", "grouped"))
        if self.groups < 1:
            raise ConfigError(f"Invalid value for 'learner.groups': {self.groups}; it must be >= 1")


class GroupSharedConv(nn.Module):
    """out = conv_g(x[:, inputs]) with output channels restored to the original order."""

    def __init__(self, conv: nn.Conv2d, groups: int, keep: int, group_scores: torch.Tensor) -> None:
        super().__init__()
        c_out = conv.out_channels
        members = torch.arange(c_out).chunk(groups)
        inputs = [torch.topk(group_scores[m].sum(0), keep).indices.sort().values for m in members]
        weight = torch.cat([conv.weight.detach()[m][:, idx] for m, idx in zip(members, inputs)])
        self.register_buffer("inputs", torch.cat(inputs))
        self.conv = nn.Conv2d(keep * len(members), c_out, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, groups=len(members), bias=conv.bias is not None)
        self.conv.weight.data.copy_(weight)
        if conv.bias is not None:
            self.conv.bias.data.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.index_select(1, self.inputs))


class ConvPruneLearner(Learner):
    Config = ConvPruneConfig

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        generator = torch.Generator().manual_seed(self.context.seed)
        include_stem = cfg.prune_stem and cfg.impl == "masked"
        convs = block_convs(backbone, include_stem=include_stem)
        # importance of each KxK kernel: (Cout, Cin)
        kernel_scores = [scores(conv.weight.detach().abs().sum((2, 3)), cfg.signal, generator) for _, conv in convs]
        if cfg.impl == "grouped":
            for (name, conv), score in zip(convs, kernel_scores):
                keep = max(1, round((1 - cfg.sparsity) * conv.in_channels))
                groups = min(cfg.groups, conv.out_channels)
                replace_submodule(backbone, name, GroupSharedConv(conv, groups, keep, score))
            return backbone
        if cfg.scope == "global":  # one threshold over kernels normalised per layer
            normalised = [s / s.mean().clamp_min(1e-12) for s in kernel_scores]
            flat = torch.cat([s.flatten() for s in normalised])
            keep = flat.numel() - round(cfg.sparsity * flat.numel())
            threshold = torch.topk(flat, keep).values.min()
            kernel_masks = [(s >= threshold).float() for s in normalised]
        else:  # per output channel, keep the top (1 - sparsity) of its input kernels
            kernel_masks = []
            for (_, conv), score in zip(convs, kernel_scores):
                keep = round((1 - cfg.sparsity) * conv.in_channels)
                mask = torch.zeros_like(score)
                mask.scatter_(1, torch.topk(score, keep, dim=1).indices, 1.0)
                kernel_masks.append(mask)
        for (_, conv), mask in zip(convs, kernel_masks):
            prune.custom_from_mask(conv, "weight", mask[:, :, None, None].expand_as(conv.weight).contiguous())
        return backbone

