"""Task catalogue: streams (ordered tasks) and their data readers."""

from nevisbench.tasks.catalog import STREAMS, Stream, TaskSpec, get_stream

__all__ = ["STREAMS", "Stream", "TaskSpec", "get_stream"]
