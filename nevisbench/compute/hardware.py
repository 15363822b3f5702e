"""Device facts: peak FLOP/s for MFU, whether task data fits on the device, how many processes a
trainer config trains with, and the slot (GPU or share of the cores) each worker process takes.

Peak FLOP/s come from Lightning's device table (`lightning.fabric.utilities.throughput.
get_available_flops`: dense tensor-core throughput per chip and dtype, from the vendors'
datasheets), which tells chips apart by their full names (an L40 is not an L4). Set
`trainer.peak_flops` to override it, or to get MFU on a device the table lacks (CPUs).

torch loads inside the functions that need it: the slot policy is read by processes that must not
load it (the sweep's launcher, and the search pool before a worker's thread count is set), and
config validation calls `world_size` before a run starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["peak_flops", "precision_dtype", "fits_on_device", "world_size", "gpu_devices", "slot_envs"]

# Lightning maps every name containing "l4" to the L4 unless it also says "Tesla", but the L40's
# name is "NVIDIA L40": the L40 gets Lightning's own "l40" row; the L40S (not in Lightning's table)
# NVIDIA's datasheet figures, dense bf16/fp16 tensor throughput 362.05 TFLOP/s.
_L40S_DENSE_16BIT = 362.05e12


def precision_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision string ('bf16-mixed' -> bfloat16, '16-mixed' ->
    float16, '32-true' -> float32, ...)."""
    import torch

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
    import torch
    from lightning.fabric.utilities import throughput

    dtype = precision_dtype(precision)
    model = torch.cuda.get_device_name(device).lower().split()
    if "l40s" in model:
        return _L40S_DENSE_16BIT if dtype in (torch.bfloat16, torch.float16) else None
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
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def world_size(trainer_cfg: Any) -> int:
    """How many processes train: `trainer.devices` as a count, a list of indices, or auto (every
    visible GPU when training on CUDA, one process on CPU)."""
    devices = trainer_cfg.devices
    if isinstance(devices, int):
        return devices
    if devices == "auto":
        import torch

        wants_gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda")
        return max(1, torch.cuda.device_count()) if wants_gpu and torch.cuda.is_available() else 1
    return len(devices)


def gpu_devices() -> list[str]:
    """The GPUs worker processes may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def slot_envs(count: int, gpus: list[str]) -> list[dict[str, str]]:
    """The slot policy of every pool of worker processes (the search's `search.parallel` pool and the
    sweep's local launcher): one environment per slot, each with an equal share of the CPU cores
    (`OMP_NUM_THREADS`, never more threads than OMP_NUM_THREADS already allows), and a GPU each
    (`CUDA_VISIBLE_DEVICES`, round-robin when `count` exceeds the GPUs) when `gpus` is not empty."""
    threads = max(1, (os.cpu_count() or 1) // count)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, min(threads, int(os.environ["OMP_NUM_THREADS"])))
    slots = [{"OMP_NUM_THREADS": str(threads)} for _ in range(count)]
    for i, slot in enumerate(slots if gpus else []):
        slot["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return slots
