"""Peak FLOP/s for MFU come from Lightning's device table, by the chip's full name."""

from __future__ import annotations

import pytest
import torch

from nevisbench.compute import hardware


@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        ("NVIDIA L40", "bf16-mixed", 181e12),  # a substring lookup (Lightning's too) gives the L4's 121 TFLOP/s
        ("NVIDIA L40S", "bf16-mixed", 362.05e12),
        ("NVIDIA L4", "bf16-mixed", 121e12),
        ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989.4e12),
        ("NVIDIA H100 PCIe", "16-mixed", 756e12),
        ("NVIDIA A100-SXM4-80GB", "bf16-mixed", 312e12),
    ],
)
def test_peak_flops_reads_lightnings_table_by_full_chip_name(monkeypatch, name, precision, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = hardware.peak_flops(torch.device("cuda", 0), precision)
    assert peak == pytest.approx(expected, rel=1e-3)


def test_configured_peak_overrides_and_cpu_or_unknown_chips_have_none(monkeypatch):
    assert hardware.peak_flops(torch.device("cpu"), "32-true") is None
    assert hardware.peak_flops(torch.device("cpu"), "32-true", configured=1e12) == 1e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery Accelerator 9000")
    assert hardware.peak_flops(torch.device("cuda", 0), "bf16-mixed") is None
