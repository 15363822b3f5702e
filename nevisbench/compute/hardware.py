"""Device facts: peak FLOP/s for MFU, and whether task data fits on the device.

Peak FLOP/s come from Lightning's device table (`lightning.fabric.utilities.throughput.
get_available_flops`: dense tensor-core throughput per chip and dtype, from the vendors'
datasheets), which tells chips apart by their full names (an L40 is not an L4). Set
`trainer.peak_flops` to override it, or to get MFU on a device the table lacks (CPUs).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["peak_flops", "precision_dtype", "fits_on_device"]

# Lightning maps every name containing "l4" to the L4 unless it also says "Tesla", but the L40's
# name is "NVIDIA L40": the L40 gets Lightning's own "l40" row; the L40S (not in Lightning's table)
# NVIDIA's datasheet figures, dense bf16/fp16 tensor throughput 362.05 TFLOP/s.
_L40S = {torch.bfloat16: 362.05e12, torch.float16: 362.05e12}


def precision_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision string ('bf16-mixed' -> bfloat16, '16-mixed' ->
    float16, '32-true' -> float32, ...)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32


def peak_flops(device: torch.device, precision: str, configured: float | None = None) -> float | None:
    """The device's peak FLOP/s for `precision`, or None when unknown (then no MFU is reported)."""
    if configured:
        return float(configured)
    if device.type != "cuda":
        return None
    from lightning.fabric.utilities import throughput

    dtype = precision_dtype(precision)
    model = torch.cuda.get_device_name(device).lower().split()
    if "l40s" in model:
        return _L40S.get(dtype)
    if "l40" in model:
        return throughput._CUDA_FLOPS["l40"].get(dtype)
    with warnings.catch_warnings():  # an unknown chip warns; it simply has no MFU
        warnings.simplefilter("ignore")
        peak = throughput.get_available_flops(device, dtype)
    return float(peak) if peak else None


def fits_on_device(nbytes: int, device: torch.device, share: float) -> bool:
    """True when `nbytes` of task data fit in `share` of the device's free memory (always on CPU)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= share * free
