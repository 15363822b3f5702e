"""What nevisbench exchanges with the outside: the one serialiser of every `--json` output
(`jsonout`) and network access that fails in seconds without a network (`net`)."""

from __future__ import annotations

__all__ = ["jsonout", "net"]
