"""Everything about data: streams and their tasks (catalog), the demo stream, the Nevis'22 SHORT
catalogue and readers, splits, the packed cache, the loader, archives and `data prepare`."""

from nevisbench.errors import choice_error
from nevisbench.tasks.catalog import STREAMS, Stream, TaskSpec

__all__ = ["STREAMS", "Stream", "TaskSpec", "get_stream"]


def get_stream(name: str) -> Stream:
    """The stream registered as `name` (the built-in streams register when first asked for)."""
    from nevisbench.tasks import demo, short  # noqa: F401

    if name not in STREAMS:
        raise choice_error("stream", name, STREAMS)
    return STREAMS[name]()
