"""Device facts: peak FLOP/s for MFU, and whether task data fits on the device.

Peak figures are dense (no 2:4 sparsity) tensor-core throughput for bf16/fp16, from NVIDIA's
datasheets: H100 SXM5 989.4 TFLOP/s, H100 PCIe 756 TFLOP/s, H200 (SXM) 989.4 TFLOP/s (same
Hopper compute as H100 SXM), A100 312 TFLOP/s, L40S 362 TFLOP/s, L4 121 TFLOP/s, A10 125 TFLOP/s.
CPUs have no entry: set `trainer.peak_flops` to get MFU there.
"""

from __future__ import annotations

import torch

__all__ = ["PEAK_BF16_FLOPS", "peak_flops", "fits_on_device"]

# substring of torch.cuda.get_device_name() -> dense bf16/fp16 tensor FLOP/s (checked in order)
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


def peak_flops(device: torch.device, precision: str, configured: float | None = None) -> float | None:
    """The device's peak FLOP/s for `precision`, or None when unknown (then no MFU is reported)."""
    if configured:
        return float(configured)
    if device.type != "cuda" or not precision.startswith(("bf16", "16")):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def fits_on_device(nbytes: int, device: torch.device, share: float) -> bool:
    """True when `nbytes` of task data fit in `share` of the device's free memory (always on CPU)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= share * free
