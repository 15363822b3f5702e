"""The learner registry: every learner, built-in or third-party, is an entry point in the group
`nevisbench.learners` (name -> `module:Class`). Names registered twice are refused."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from nevisbench.errors import PluginError, choice_error

if TYPE_CHECKING:
    from nevisbench.api.learner import Learner

__all__ = ["ENTRY_POINT_GROUP", "learner_names", "get_learner_class", "is_builtin"]

ENTRY_POINT_GROUP = "nevisbench.learners"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            # refused when that name is asked for (get_learner_class); the other learners stay usable
            _twice.setdefault(ep.name, [found[ep.name].value]).append(ep.value)
        found.setdefault(ep.name, ep)
    return found


_twice: dict[str, list[str]] = {}  # learner names registered by several packages: their targets


def is_builtin(name: str) -> bool:
    """Whether `name` is one of the learners nevisbench ships (its entry point is in nevisbench)."""
    ep = _entry_points().get(name)
    return ep is not None and ep.value.startswith("nevisbench.")


def learner_names() -> list[str]:
    return sorted(_entry_points())


def get_learner_class(name: str) -> type[Learner]:
    """Load the learner class registered as `name`, checking it honours the learner API."""
    from nevisbench.api.learner import Learner, LearnerConfig, check_api

    eps = _entry_points()
    if name not in eps:
        raise choice_error("learner", name, eps, fix="See `nevisbench list learners`.")
    if name in _twice:
        raise PluginError(f"Learner '{name}' is registered twice: by {' and by '.join(repr(v) for v in _twice[name])}. "
                          "Uninstall one of the packages.")
    if not eps[name].value.startswith("nevisbench."):  # a plugin: the meter's guards are in place before its import
        from nevisbench.compute.native import arm_key_guard

        arm_key_guard()
    try:
        cls = eps[name].load()
    except Exception as exc:
        raise PluginError(f"Learner plugin '{name}' ({eps[name].value}) failed to import: {exc!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Learner)):
        raise PluginError(
            f"Learner plugin '{name}' ({eps[name].value}) is not a subclass of nevisbench.Learner"
        )
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, LearnerConfig)):
        raise PluginError(
            f"Learner plugin '{name}': its Config must be a dataclass subclassing nevisbench.LearnerConfig"
        )
    problem = check_api(cls)
    if problem is not None:
        raise PluginError(f"Learner plugin '{name}' ({eps[name].value}) {problem}")
    return cls
