"""Streams and tasks: a small registry of named streams, each an ordered list of `TaskSpec`s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nevisbench.errors import ConfigError, choice_error
from nevisbench.tasks.loader import TaskData

__all__ = ["TaskSpec", "Stream", "STREAMS", "register_stream"]


@dataclass(frozen=True)
class TaskSpec:
    """One event of a stream. `load(root=..., image_size=..., seed=...)` returns its `TaskData`."""

    key: str
    name: str
    domain: str  # object | ocr | texture | face | scene | medical | ...
    num_classes: int
    load: Callable[..., TaskData] = field(repr=False, compare=False)
    multi_label: bool = False
    year: int | None = None
    source: str = ""
    position: int | None = None  # position in the full stream (sub-streams keep SHORT's numbering)
    requires_data: bool = False  # reads a prepared cache under data.root (see `nevisbench data`)


@dataclass(frozen=True)
class Stream:
    name: str
    description: str
    tasks: tuple[TaskSpec, ...]

    def select(self, keys: list[str] | None) -> Stream:
        """The subset `keys`, kept in stream order (each key may occur several times, e.g. MNIST)."""
        if not keys:
            return self
        known = {t.key for t in self.tasks}
        for key in keys:
            if key not in known:
                raise choice_error(f"task in stream '{self.name}':", key, known)
        if len(set(keys)) != len(keys):
            raise ConfigError(f"stream.tasks lists a task twice: {list(keys)}")
        return Stream(self.name, self.description, tuple(t for t in self.tasks if t.key in set(keys)))


STREAMS: dict[str, Callable[[], Stream]] = {}


def register_stream(name: str) -> Callable[[Callable[[], Stream]], Callable[[], Stream]]:
    def wrap(builder: Callable[[], Stream]) -> Callable[[], Stream]:
        if name in STREAMS:
            raise ValueError(f"stream '{name}' registered twice")
        STREAMS[name] = builder
        return builder

    return wrap
