"""Compute accounting: the FLOP meter (plain Python), device facts (peak FLOP/s, memory), and the
per-image probe behind `nevisbench flops`."""

__all__: list[str] = []
