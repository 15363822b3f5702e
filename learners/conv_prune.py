"""`conv_prune`: convolution-filter (kernel-level) structured pruning.

`impl=masked` (default, exact paper semantics): for every output channel keep the (1 - sparsity)
fraction of the KxK input kernels it reads (Cin/groups of them: grouped ResNeXt convs included)
with the largest L1 norm (or random ones), and at least one; the others are masked to zero. Exact,
but masked convs run densely: algorithmic FLOPs fall, executed FLOPs do not. The stem
(`prune_stem=true`) follows the same rule over its 3 input kernels: it keeps max(1, round((1 - X)
x 3)) per output channel, i.e. 3 below X = 1/6, 2 up to X = 1/2 and 1 above, so it keeps at least
1/3 of its FLOPs and the network never stops depending on its input. `scope=global` ranks kernels
normalised per layer under one threshold, and always keeps each output channel's best kernel.

`impl=grouped` (runs faster, a DIFFERENT sparsity pattern): the output channels of each conv are
split into `groups` contiguous groups (within each of its own groups for a grouped conv; lowered
to the largest divisor of the output channels per group), and each group reads one shared subset
of (1 - sparsity) of the input channels it could read (at least one), chosen by the group's summed
kernel norms. The layer gathers those inputs and runs one ordinary (grouped) convolution, so it
really executes (1 - sparsity) of the dense FLOPs. Kernels are kept per group, not per output
channel. With `groups=1` (default) this is a per-layer
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
from torch.nn.modules.utils import _pair

from nevisbench.api.learner import Learner, replace_submodule
from nevisbench.errors import ConfigError, choice_error
from nevisbench.learners._pruning import PruneConfig, global_masks, scores
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
    """out = conv_g(x[:, inputs]) with output channels in the original order.

    The output channels of each of the original conv's groups (one for a dense conv, 32 for a
    ResNeXt 32x4d 3x3 conv) are split into `groups` contiguous chunks of equal size; each chunk
    reads the `keep` inputs of its original group (out of Cin/groups) with the largest summed
    `group_scores` (Cout, Cin/groups), so the result is one grouped conv with
    conv.groups x `groups` groups of `keep` inputs each.
    """

    def __init__(self, conv: nn.Conv2d, groups: int, keep: int, group_scores: torch.Tensor) -> None:
        super().__init__()
        c_out, group_width = conv.weight.shape[:2]
        chunks = [(g, m) for g, outputs in enumerate(torch.arange(c_out).chunk(conv.groups)) for m in outputs.chunk(groups)]
        if c_out % len(chunks):
            raise ValueError(f"GroupSharedConv: groups={groups} must divide the {c_out // conv.groups} output "
                             f"channels of each of the conv's {conv.groups} group(s)")
        local = [torch.topk(group_scores[m].sum(0), keep).indices.sort().values for _, m in chunks]
        weight = torch.cat([conv.weight.detach()[m][:, idx] for (_, m), idx in zip(chunks, local, strict=False)])
        self.register_buffer("inputs", torch.cat([idx + g * group_width for (g, _), idx in zip(chunks, local, strict=False)]))
        self.conv = nn.Conv2d(keep * len(chunks), c_out, _pair(conv.kernel_size), _pair(conv.stride),
                              conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
                              _pair(conv.dilation), groups=len(chunks), bias=conv.bias is not None)
        self.conv.weight.data.copy_(weight)
        if conv.bias is not None and self.conv.bias is not None:
            self.conv.bias.data.copy_(conv.bias.detach())
        self.inputs: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.index_select(1, self.inputs))


class ConvPruneLearner(Learner):
    Config = ConvPruneConfig
    config: ConvPruneConfig
    backbone_families = ("resnet",)  # its kernels are the 3x3 convs of ResNet blocks (layer1..layer4)

    def prepare(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        generator = torch.Generator().manual_seed(self.context.seed)
        convs = block_convs(backbone, include_stem=cfg.prune_stem and cfg.impl == "masked")
        # importance of each KxK kernel: (Cout, Cin/groups), the inputs each output channel reads
        kernel_scores = [scores(conv.weight.detach().abs().sum((2, 3)), cfg.signal, generator) for _, conv in convs]
        if cfg.impl == "grouped":
            for (name, conv), score in zip(convs, kernel_scores, strict=False):
                chunks = _largest_divisor(conv.out_channels // conv.groups, at_most=cfg.groups)
                replace_submodule(backbone, name, GroupSharedConv(conv, chunks, _kept(score, cfg.sparsity), score))
            return backbone
        if cfg.scope == "global":  # one threshold over kernels normalised per layer
            kernel_masks = global_masks([s / s.mean().clamp_min(1e-12) for s in kernel_scores], cfg.sparsity)
        else:  # per output channel, keep the top (1 - sparsity) of its input kernels
            kernel_masks = []
            for score in kernel_scores:
                mask = torch.zeros_like(score)
                mask.scatter_(1, torch.topk(score, _kept(score, cfg.sparsity), dim=1).indices, 1.0)
                kernel_masks.append(mask)
        for (_, conv), mask in zip(convs, kernel_masks, strict=False):
            prune.custom_from_mask(conv, "weight", mask[:, :, None, None].expand_as(conv.weight).contiguous())
        return backbone


def _kept(kernel_scores: torch.Tensor, sparsity: float) -> int:
    """Input kernels kept per output channel: (1 - sparsity) of the Cin/groups it reads, at least 1."""
    return max(1, round((1 - sparsity) * kernel_scores.shape[1]))


def _largest_divisor(n: int, *, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)
