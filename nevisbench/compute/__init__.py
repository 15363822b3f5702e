"""Compute accounting: the FLOP meter (plain Python) and device facts (peak FLOP/s, memory, device
counts and the slot each worker process takes). The per-image probe behind `nevisbench flops`
runs a learner, so it lives in `nevisbench.run.probe`."""

__all__: list[str] = []
