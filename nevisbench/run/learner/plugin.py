"""Calling a learner plugin: building it, and one wrapper for every hook it implements, so a plugin
that raises fails as one line naming the plugin and the hook, never as a traceback.

Hooks the runner calls outside training and evaluation (`prepare`, `begin_task`, `end_task`,
`state_dict`, `load_state_dict`, `task_report`) of a third-party plugin are counted by the FLOP
meter and charged to training (`nevisbench.compute.counter.counting_outside`); training and evaluation have their own
meter windows. Threads are counted from the moment a learner is built (`arm_threads`)."""

from __future__ import annotations

import contextlib
import errno
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nevisbench.api.learner import Learner, LearnerContext
from nevisbench.compute import guard
from nevisbench.compute.flops import arm_threads, counting_outside, take_pending
from nevisbench.errors import NevisbenchError, PluginError, TaskFailed, WriteFailed
from nevisbench.registry import get_learner_class, is_builtin
from nevisbench.run.learner.data import StreamData

__all__ = ["build_learner", "plugin_hook", "collect_garbage"]


# hooks whose work the meter counts in its own windows (training, evaluation)
_WINDOWED = ("training on ", "forward() while evaluating ")
# set to 1: a plugin's failure prints its full traceback under the one line (the CLI reads it)
TRACEBACK_ENV = "NEVISBENCH_TRACEBACK"


def _raised_at(exc: BaseException, learner_name: str) -> str:
    """' (raised at <file>:<line>)': the deepest frame of the traceback in the learner's own module or
    package (the deepest frame of all when none is, e.g. a plugin calling torch wrongly from a lambda)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    try:
        module = sys.modules.get(get_learner_class(learner_name).__module__)
        root = Path(module.__file__) if module is not None and module.__file__ else None
    except Exception:  # a learner that cannot be loaded again: no package to look in
        root = None
    if root is not None and root.name == "__init__.py":
        root = root.parent
    own = [f for f in frames if root is not None and (Path(f.filename) == root or root in Path(f.filename).parents)]
    frame = (own or frames)[-1]
    return f" (raised at {frame.filename}:{frame.lineno}; {TRACEBACK_ENV}=1 shows the traceback)"



@contextlib.contextmanager
def plugin_hook(learner_name: str, hook: str) -> Iterator[None]:
    """Turn anything a learner's `hook` raises into a one-line PluginError naming both; count the
    hook's work (charged to training) unless a meter window counts it."""
    builtin = is_builtin(learner_name)
    windowed = hook.startswith(_WINDOWED) or builtin  # built-ins: see docs/flop-meter.md
    counting = contextlib.nullcontext() if windowed else counting_outside()
    if not builtin:
        guard.mark_signals()
        guard.mark_threads()
    try:
        with counting:
            yield
        if not builtin:  # signal handlers and threads the meter cannot count (docs/flop-meter.md)
            guard.check_signals(hook)
            guard.check_threads(hook)
    except (NevisbenchError, TaskFailed, KeyboardInterrupt, SystemExit):  # the harness's own signals
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is the machine's state, not the learner's failure
            raise WriteFailed(f"Cannot write {exc.filename or 'a file'} during {hook}: the disk is full "
                              f"(OSError {exc.errno}); free some space and resume the run") from None
        raise PluginError(f"Learner '{learner_name}' failed in {hook}: {exc!r}{_raised_at(exc, learner_name)}") from exc
    except Exception as exc:
        raise PluginError(f"Learner '{learner_name}' failed in {hook}: {exc!r}{_raised_at(exc, learner_name)}") from exc


def build_learner(cfg: DictConfig, feature_dim: int | None, cls: type | None = None, *, data: Any = None) -> Learner:
    """The configured learner, built from its config and the run-level context (`cls`: the class
    already loaded, e.g. in a search worker, which has no view of a test's registered plugins;
    `data`: the run's StreamData, the training examples the learner may draw)."""
    if cls is None:  # a run's first learner: work counted outside an earlier run is not this run's
        take_pending()
    cls = cls or get_learner_class(cfg.learner.name)
    arm_threads()  # before the plugin's code runs: any thread it starts is counted
    context = LearnerContext(scenario=cfg.scenario, seed=cfg.seed, image_size=cfg.data.image_size, train=cfg.train,
                             feature_dim=feature_dim, data=data.for_learner() if isinstance(data, StreamData) else data)
    try:
        with counting_outside():
            return cls(OmegaConf.to_object(cfg.learner), context)
    except Exception as exc:
        raise PluginError(f"Learner '{cfg.learner.name}' failed to initialise: {exc!r}") from exc


def collect_garbage(learner_name: str, release: Any = None) -> None:
    """Call `release` (which drops the harness's references to the task's objects) and run the garbage
    collector, counted as the learner's work outside the windows: finalisers (`__del__`) of what the
    task left, freed by reference count or collected as cycles, run here, not at some later
    uncounted moment."""
    import gc

    with plugin_hook(learner_name, "a finaliser (__del__) run as the task's objects were released"):
        if release is not None:
            release()
        gc.collect()
