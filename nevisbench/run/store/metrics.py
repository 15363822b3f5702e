"""The metrics every run is scored with, in the order their summary sections are written. A new
metric is one file (a `StreamMetric`, see `nevisbench.run.store.metric`) and one line here."""

from __future__ import annotations

from nevisbench.run.store.audit import TimeAudit
from nevisbench.run.store.continual import ContinualScores
from nevisbench.run.store.forward_transfer import ForwardTransfer
from nevisbench.run.store.metric import StreamMetric

__all__ = ["METRICS"]

METRICS: tuple[StreamMetric, ...] = (ContinualScores(), ForwardTransfer(), TimeAudit())
