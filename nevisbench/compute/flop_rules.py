"""FLOP rules: the formula of every op the meter counts, and the dispatch mode that applies them.

2 FLOPs per multiply-add. torch's registry (`torch.utils.flop_counter`) supplies matmuls,
convolutions and the SDPA kernels it knows; nevisbench adds or corrects:
- `convolution_backward`: grad-input and grad-weight one forward each (torch over-counts grouped
  convs by `groups`);
- attention kernels torch's registry lacks: the CPU flash kernel, the "overrideable" fused kernel,
  MPS's math kernel, and the fast paths `nn.MultiheadAttention` (`_native_multi_head_attention`)
  and `nn.TransformerEncoderLayer` (`_transformer_encoder_layer_fwd`) take in eval mode or under
  `no_grad`. Each fast-path op is charged what the same layer's training forward is charged (its
  projections, QK^T, AV and, for the encoder layer, the feed-forward matmuls), so eval and
  `no_grad` forwards cost what training forwards do.

`CountingMode` is a lean TorchDispatchMode: no module tracking, no global hooks; it runs each op
and hands (op, formula, args, out) to a report callback.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_flop_count

__all__ = ["conv_backward_flop", "formulas", "CountingMode", "bytes_moved", "zero_flops"]

aten = torch.ops.aten


def conv_backward_flop(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
    _output_padding, _groups, output_mask, out_shape=None, **kwargs,
) -> int:
    """FLOPs of `aten.convolution_backward`: grad-input and grad-weight each cost one forward.

    torch's own rule computes grad-weight as a dense conv over all input channels and so
    over-counts grouped convolutions by a factor of `groups` (2.5x for the whole backward at
    groups=4). A conv's forward count already uses the per-group input width (w_shape[1]), so each
    backward term is exactly one forward count.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def zero_flops(*args, out_val=None, **kwargs) -> int:
    """An op counted at 0 FLOPs (e.g. `_to_copy`: autocast's copies of masked weights, which the masks track)."""
    return 0


def _conv(x, w, _bias, _stride, _padding, _dilation, transposed, *rest, out_val=None, **kwargs) -> int:
    return conv_flop_count(list(x.shape), list(w.shape), list(out_val.shape), bool(transposed))


def _conv_backward(grad_out, x, w, *args, out_val=None, **kwargs) -> int:
    return conv_backward_flop(grad_out.shape, x.shape, w.shape, *args)


def _mm(a, b, *, out_val=None, **kwargs) -> int:
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(_bias, a, b, *, out_val=None, **kwargs) -> int:
    return _mm(a, b)


def _sequences(x: torch.Tensor) -> list[tuple[int, int]]:
    """(batch, length) groups of a (batch, length, embed) or (length, embed) input; a nested
    tensor (padding removed) is one group per sequence."""
    if x.is_nested:
        return [(1, int(t.shape[0])) for t in x.unbind()]
    return [(1, int(x.shape[0]))] if x.dim() == 2 else [(int(x.shape[0]), int(x.shape[1]))]


def _attention(query, key, embed: int) -> int:
    """Input projections of q, k, v, then QK^T and AV, then the output projection: what
    `F.multi_head_attention_forward` (linear, SDPA or bmm, linear) is charged in training."""
    total = 0
    for (b, lq), (_, lk) in zip(_sequences(query), _sequences(key), strict=False):
        total += 2 * b * embed * embed * (lq + 2 * lk)  # q, k, v projections
        total += 2 * 2 * b * lq * lk * embed  # QK^T and AV over all heads
        total += 2 * b * lq * embed * embed  # output projection
    return total


def _native_mha(query, key, value, embed_dim, num_head, *args, out_val=None, **kwargs) -> int:
    return _attention(query, key, int(embed_dim))


def _encoder_layer(src, embed_dim, num_heads, *args, out_val=None, **kwargs) -> int:
    ffn_weight_1 = args[11] if len(args) > 11 else kwargs["ffn_weight_1"]
    tokens = sum(b * length for b, length in _sequences(src))
    return _attention(src, src, int(embed_dim)) + 2 * 2 * tokens * int(embed_dim) * int(ffn_weight_1.shape[0])


def formulas() -> dict:
    """op overload packet -> formula(*args, out_val=..., **kwargs) taking the op's real arguments."""
    stock = flop_counter.flop_registry
    fixed = {
        aten.convolution: _conv, aten._convolution: _conv, aten.convolution_backward: _conv_backward,
        aten.mm: _mm, aten.addmm: _addmm,
        aten._native_multi_head_attention: _native_mha, aten._transformer_encoder_layer_fwd: _encoder_layer,
    }
    aliases = {  # kernels torch's registry lacks, counted like their registered siblings
        aten._scaled_dot_product_flash_attention_for_cpu: aten._scaled_dot_product_flash_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: aten._scaled_dot_product_flash_attention_backward,
        aten._scaled_dot_product_fused_attention_overrideable: aten._scaled_dot_product_efficient_attention,
        aten._scaled_dot_product_fused_attention_overrideable_backward: aten._scaled_dot_product_efficient_attention_backward,
        aten._scaled_dot_product_attention_math_for_mps: aten._scaled_dot_product_efficient_attention,
    }
    # the registry's formulas are already wrapped to take real arguments (`register_flop_formula`)
    return {**stock, **{alias: stock[target] for alias, target in aliases.items() if target in stock}, **fixed}


_METADATA = {  # ops FlopCounterMode also passes through untouched (size/stride queries)
    aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
    aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default, aten.size.default,
    aten.sym_size.default, aten.stride.default, aten.sym_stride.default, aten.storage_offset.default,
    aten.sym_storage_offset.default, aten.numel.default, aten.sym_numel.default, aten.dim.default,
    torch.ops.prim.layout.default,
}

Report = Callable[[object, Callable, tuple, dict, object], None]
Moved = Callable[[object, tuple], None]  # (out, args) of an op without a FLOP rule


class CountingMode(TorchDispatchMode):
    """Runs every op; for ops with a formula calls `report(packet, formula, args, kwargs, out)`, for the
    others that are not views `moved(out, args)`. Ops without a formula that decompose are decomposed
    (their parts are counted), as in FlopCounterMode.

    Every op runs through this Python method, so its common case is kept short: what an op is
    (metadata query, counted, decomposable, view, other) is worked out once per op and table
    (`_plan`), and looked up by the op's id (an OpOverload's own hash is a Python call)."""

    def __init__(self, table: dict, report: Report, moved: Moved | None = None) -> None:
        super().__init__()
        self.table, self.report, self.moved = table, report, moved
        self._plans = _plans_for(table)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in a dynamo-disable wrapper (two Python frames per op,
        # ~2% of a ResNet-18 CPU step) unless the mode opts out. Counted steps run under the counter's
        # force_eager stance, so there is nothing for dynamo to skip here.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        plan = self._plans.get(id(func))
        if plan is None:
            plan = _plan(self._plans, self.table, func)
        kind, packet, formula, op, _ = plan
        kwargs = kwargs or {}
        if kind is _MOVED:  # the common case: an op with no formula (elementwise, copies, reductions)
            out = op(*args, **kwargs) if func._pyobj_dispatcher is None else func(*args, **kwargs)
            if self.moved is not None:
                self.moved(out, args)
            return out
        if kind is _METADATA_OP:
            return NotImplemented
        if kind is _DECOMPOSE:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None:
            self.report(packet, formula, args, kwargs, out)
        elif self.moved is not None and not _is_view(func):
            self.moved(out, args)
        return out


_MOVED, _METADATA_OP, _DECOMPOSE, _OTHER = "moved", "metadata", "decompose", "other"
_PLANS: dict[int, tuple[dict, dict]] = {}  # id(table) -> (table, {id(op): plan}); the table is held so its id stays its own


def _plans_for(table: dict) -> dict:
    held = _PLANS.get(id(table))
    if held is None or held[0] is not table:
        held = _PLANS[id(table)] = (table, {})
    return held[1]


def _plan(plans: dict, table: dict, func) -> tuple:
    """(kind, packet, formula, callable) of `func` under `table`, remembered in `plans` (with `func`
    itself last, so the id it is kept under stays its own). `_MOVED`: no formula, no composite kernel to
    decompose into, not a view: run it (its C++ entry directly, as `OpOverload.__call__` does) and
    report the bytes it moved."""
    packet = func._overloadpacket
    formula = table.get(packet)
    if func in _METADATA:
        kind = _METADATA_OP
    elif formula is None and _decomposes(func):
        kind = _DECOMPOSE
    elif formula is None and not _is_view(func):
        kind = _MOVED
    else:
        kind = _OTHER
    plan = plans[id(func)] = (kind, packet, formula, func._op, func)
    return plan


_DECOMPOSES: dict = {}  # op -> whether it has a composite kernel `decompose` would run (looked up once per op)


def _decomposes(func) -> bool:
    known = _DECOMPOSES.get(func)
    if known is None:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        known = _DECOMPOSES[func] = func is not torch.ops.prim.device.default and (
            key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key))
    return known


_VIEWS: dict = {}  # op -> whether it only makes a view (moves no bytes)


def _is_view(func) -> bool:
    view = _VIEWS.get(func)
    if view is None:
        view = _VIEWS[func] = bool(getattr(func, "is_view", False)) or func._overloadpacket in _ALIASES
    return view


_ALIASES = {torch.ops.aten.detach, torch.ops.aten.alias, torch.ops.aten.lift_fresh}


def bytes_moved(out: object, args: tuple) -> float:
    """What an op without a FLOP rule moved, roughly: the larger of its output and its first tensor
    operand (an elementwise op writes its output; a reduction reads its operand). A tensor's size is
    numel x element size (`nbytes`, one attribute instead of two calls; sparse tensors have none)."""
    size = 0
    first = args[0] if args else None
    if isinstance(first, torch.Tensor):
        size = _nbytes(first)
    if isinstance(out, torch.Tensor):
        written = _nbytes(out)
        return float(written if written > size else size)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        size = max(size, sum(_nbytes(t) for t in out if isinstance(t, torch.Tensor)))
    return float(size)


def _nbytes(t: torch.Tensor) -> int:
    try:
        return t.nbytes
    except RuntimeError:  # sparse layouts
        return t.numel() * t.element_size()
