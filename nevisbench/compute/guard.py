"""What a learner must not do to the meter, and the checks that notice it.

Code in the same process cannot be fenced off, so the meter does not rely on being unreachable: it
notices tampering and the run refuses the task's results line (`violations()`, read at commit):
- its methods replaced (the meter's, the counter's, the dispatch mode's, the meter callback's):
  `protect(cls)` records a class's functions at import, `tampered(obj, ...)` compares identities;
- the meter paused from outside the harness (`check_pause_caller`);
- the counting dispatch mode popped (`torch.utils._python_dispatch._pop_mode`, which
  `_disable_current_modes` uses, is wrapped; `mode_missing` checks the stack at each step);
- a signal handler or interval timer installed (`check_signals`: handlers run while the meter's mode
  is popped inside its own dispatch, so their work would not be counted);
- a thread started with `_thread.start_new_thread`: `arm_raw_threads` counts the work of those
  started through the module attribute; `raw_threads_running` sees the others.
- the meter's data (its tallies, its policy) written from outside the harness: `write` judges the
  writer of each attribute the meter's `__setattr__` sets, and `unsealed` compares the values with
  those the harness wrote (a write around `__setattr__`);
- a kernel or fallthrough registered at the dispatcher's Python key for an op with a FLOP rule
  (`torch.library`: the op then skips the counting mode): `check_kernels`, at every counted step;
What the checks cannot see (a process that outlives its checks, a learner that edits the shadow
values too) the time audit (`compute/audit.py`) is there for.
"""

from __future__ import annotations

import _signal
import _thread
import operator
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _python_dispatch

__all__ = ["protect", "tampered", "arm_kernel_guard", "check_kernels", "counting_at", "watch", "watched", "write", "unsealed",
           "violation", "violations", "take_violations",
           "check_pause_caller", "flag",
           "take_flags", "mark_signals", "check_signals", "arm_raw_threads", "raw_threads_running", "mark_threads", "check_threads",
           "arm_mode_guard", "mode_missing"]

_VIOLATIONS: list[str] = []
_FLAGS: list[str] = []
_PROTECTED: list[tuple[type, dict[str, Any]]] = []
_HARNESS = ("nevisbench.",)  # modules whose code may pause the meter (the learners nevisbench ships never do)
_METER_MODULES = ("nevisbench.compute.guard", "nevisbench.compute.flops", "nevisbench.compute.counter")


def violation(message: str) -> None:
    """Record that the learner did something the meter cannot charge (the task will be refused)."""
    if message not in _VIOLATIONS:
        _VIOLATIONS.append(message)


def flag(message: str) -> None:
    """Record something the task's line must carry as a flag (it is scored, and marked)."""
    if message not in _FLAGS:
        _FLAGS.append(message)


def take_flags() -> list[str]:
    out = list(_FLAGS)
    _FLAGS.clear()
    return out


def violations() -> list[str]:
    return list(_VIOLATIONS)


def take_violations() -> list[str]:
    """The violations recorded since the last call (and forget them)."""
    out = list(_VIOLATIONS)
    _VIOLATIONS.clear()
    return out


def _caller(skip: int = 2) -> tuple[str, str]:
    """(module, 'file:line') of the first frame outside this module, contextlib and torch."""
    frame = sys._getframe(skip)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module not in (__name__, "contextlib") and not module.startswith("torch."):
            return module, f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "", "?"


# -- methods replaced ------------------------------------------------------------------------------
def protect(cls: type) -> type:
    """Record `cls`'s functions now (at the harness's import, before any plugin loads)."""
    _PROTECTED.append((cls, {name: value for name, value in vars(cls).items() if callable(value) or isinstance(value, property)}))
    return cls


def tampered(*objects: object) -> list[str]:
    """What was replaced in the protected classes, or on `objects` (instance attributes shadowing a
    protected method, or an object whose class is not the protected one)."""
    found = []
    for cls, methods in _PROTECTED:
        for name, original in methods.items():
            if vars(cls).get(name) is not original:
                found.append(f"{cls.__name__}.{name} was replaced")
    for obj in objects:
        protected = [(cls, methods) for cls, methods in _PROTECTED if isinstance(obj, cls)]
        for cls, methods in protected:
            if type(obj) is not cls and any(name in vars(type(obj)) for name in methods):
                found.append(f"the harness's {cls.__name__} was swapped for a subclass {type(obj).__name__}")
            shadowed = sorted(set(methods) & set(getattr(obj, "__dict__", {})))
            found += [f"{cls.__name__}.{name} was replaced on the instance" for name in shadowed]
    return found


# -- pausing ---------------------------------------------------------------------------------------
def check_pause_caller() -> bool:
    """Whether the code pausing the meter is the harness's; if not, the pause is recorded (and the
    caller is expected to keep counting)."""
    module, where = _caller(3)
    if module.startswith(_HARNESS) and not module.startswith("nevisbench.learners."):
        return True
    violation(f"paused the FLOP meter (at {where}): work done while paused cannot be charged")
    return False


# -- the meter's data ------------------------------------------------------------------------------
_ABSENT = object()
_SHADOWS: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}  # id(object) -> (the object, its values as the harness wrote them)


def _writer() -> tuple[bool, str]:
    """Whether the code writing the meter's data (the first frame outside the meter's own modules) is
    the harness's, and where it is."""
    frame = sys._getframe(3)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module not in _METER_MODULES and module != "contextlib" and not module.startswith("torch."):
            harness = module.startswith(_HARNESS) and not module.startswith("nevisbench.learners.")
            return harness, f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return True, "?"


def watch(obj: object) -> None:
    """From now on, judge who writes `obj`'s attributes (a run's meter, its tallies): its values now
    are the harness's."""
    key = id(obj)

    def forget(_: object) -> None:
        _SHADOWS.pop(key, None)

    _SHADOWS[key] = (weakref.ref(obj, forget), dict(vars(obj)))


def watched(obj: object) -> bool:
    held = _SHADOWS.get(id(obj))
    return held is not None and held[0]() is obj


def write(obj: object, name: str, value: Any) -> None:
    """`obj.name = value` for the meter's data (its `__setattr__`). On a watched object the harness's
    writes are kept as its shadow values; a write from anywhere else (a learner lowering its charge,
    resetting a tally, calling the meter's charging methods, changing its counting policy) is
    recorded, and done."""
    before = vars(obj).get(name, _ABSENT)
    object.__setattr__(obj, name, value)
    held = _SHADOWS.get(id(obj))
    if held is None or held[0]() is not obj:
        return  # not a run's meter (a copy, a tally being built, a test's own meter)
    harness, where = _writer()
    if harness:
        kept = held[1].get(name, _ABSENT)
        if kept is not before and kept != before:  # changed around the guard since the harness wrote it
            violation(f"the FLOP meter's {type(obj).__name__}.{name} was written around its guard")
        held[1][name] = value
    else:
        violation(f"wrote the FLOP meter's {type(obj).__name__}.{name} (at {where}): the compute it charges "
                  "was changed from outside the harness")
        held[1][name] = value  # recorded once: the harness's next write is not a second finding


def unsealed(*objects: object) -> list[str]:
    """What differs on `objects` from the values the harness wrote (writes that went around
    `write`: `object.__setattr__`, `__dict__`)."""
    found = []
    for obj in objects:
        held = _SHADOWS.get(id(obj))
        values = held[1] if held is not None and held[0]() is obj else {}
        for name, value in vars(obj).items():
            if name not in values or (values[name] is not value and values[name] != value):
                found.append(f"the FLOP meter's {type(obj).__name__}.{name} was written around its guard")
    return found


# -- the dispatcher's kernels ----------------------------------------------------------------------
_KERNEL_OPS: list[str] = []  # the counted ops (those with a FLOP rule), by the dispatcher's names
_KERNEL_BASELINE: set[str] = set()  # those that had a kernel at the Python key when the guard was armed


def arm_kernel_guard(ops: Any) -> None:
    """Watch the dispatcher's Python key for the ops with a FLOP rule (`ops`: OpOverloads): a kernel or
    a fallthrough registered there for one of them (`torch.library`) runs instead of the counting
    mode, which then never sees the op. Idempotent."""
    if _KERNEL_OPS:
        return
    for op in ops:  # OpOverloadPackets (every overload) or OpOverloads
        name = getattr(op, "_qualified_op_name", None)
        if name is not None:
            overloads = op.overloads()
        else:
            schema = getattr(op, "_schema", None)
            if schema is None:
                continue
            name, overloads = schema.name, [getattr(op, "_overloadname", "default")]
        _KERNEL_OPS.extend(name if overload == "default" else f"{name}.{overload}" for overload in overloads)
    _KERNEL_BASELINE.update(name for name in _KERNEL_OPS if any(
        _has_kernel(name, key) for key in ("Python", "Fake")))


def _has_kernel(name: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
    except RuntimeError:  # an op this build does not have
        return False


_COUNTING_KEY = ["Python"]  # the dispatcher key the meter counts at: the Python mode's, or the native engine's


def counting_at(key: str) -> None:
    """The meter counts at dispatcher key `key` from now on ("Python", or "Fake" for the native engine)."""
    _COUNTING_KEY[0] = key


def _kernel_key(name: str) -> str | None:
    """The key the meter counts at, where `name` has a kernel of its own there (a kernel at the Python
    key runs instead of the dispatch mode; one at `Fake` instead of the native engine's fallback)."""
    key = _COUNTING_KEY[0]
    return key if _has_kernel(name, key) else None


def check_kernels(where: str) -> None:
    """Record a counted op that gained a kernel at the dispatcher key the meter counts at since the guard was
    armed (~3 us an op, 54 ops: run at every counted step, the fit's end and the commit)."""
    for name in _KERNEL_OPS:
        key = None if name in _KERNEL_BASELINE else _kernel_key(name)
        if key is not None:
            violation(f"registered a kernel for {name} at the dispatcher's {key} key (found at {where}): the FLOP "
                      "meter no longer sees the op, so its compute cannot be charged")


# -- the dispatch mode -----------------------------------------------------------------------------
_ORIGINAL_POP = _python_dispatch._pop_mode
_MODE_TYPES: tuple[type, ...] = ()


def _guarded_pop(k: Any = None) -> Any:
    mode = _ORIGINAL_POP(k)
    if isinstance(mode, _MODE_TYPES) and sys._getframe(1).f_code is not _EXIT_CODE:
        _module, where = _caller(2)
        violation(f"popped the FLOP meter's dispatch mode (at {where}): ops run without it are not counted")
    return mode


_EXIT_CODE = _python_dispatch.TorchDispatchMode.__exit__.__code__


def arm_mode_guard(*mode_types: type) -> None:
    """From now on, popping a mode of `mode_types` other than by its own `__exit__` is recorded."""
    global _MODE_TYPES
    _MODE_TYPES = tuple(set(_MODE_TYPES) | set(mode_types))
    _python_dispatch._pop_mode = _guarded_pop


def mode_missing(mode: object) -> bool:
    """Whether `mode` (entered, not exited) no longer counts this thread's ops: a Python mode no longer
    on the thread's dispatch mode stack, a native one whose dispatcher key was switched off."""
    missing = getattr(mode, "missing", None)
    if callable(missing):
        return bool(missing())
    return mode not in _python_dispatch._get_current_dispatch_mode_stack()


# -- signals ---------------------------------------------------------------------------------------
_TIMERS = tuple(getattr(signal, name) for name in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF") if hasattr(signal, name))


def _readable_signals() -> tuple[int, ...]:
    found = []
    for sig in signal.valid_signals():
        try:
            _signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        found.append(int(sig))
    return tuple(found)


_SIGNALS = _readable_signals()


def _now() -> tuple[Any, ...]:
    """Every readable signal's handler, in `_SIGNALS`' order. `_signal.getsignal` (C) returns the
    handler as installed; `signal.getsignal` wraps it in an enum, which took ~0.4 ms per step."""
    return tuple(map(_signal.getsignal, _SIGNALS))


def _handlers() -> dict[int, Any]:
    return dict(zip(_SIGNALS, _now(), strict=True))


_MARKED: dict[int, Any] = {}
_MARKED_NOW: tuple[Any, ...] = ()  # the same handlers, in `_SIGNALS`' order (the per-step check compares identities)


def mark_signals() -> None:
    """Take the process's signal handlers as they are now as the reference (the harness re-marks after
    its own changes, e.g. Lightning's handlers at the start of a fit)."""
    global _MARKED, _MARKED_NOW
    if threading.current_thread() is threading.main_thread():
        _MARKED_NOW = _now()
        _MARKED = dict(zip(_SIGNALS, _MARKED_NOW, strict=True))


def check_signals(where: str) -> None:
    """Record a violation for any signal handler or interval timer installed since `mark_signals()`."""
    if threading.current_thread() is not threading.main_thread():
        return
    now = _now()
    if len(now) != len(_MARKED_NOW) or not all(map(operator.is_, now, _MARKED_NOW)):  # else: nothing changed
        for sig, handler in zip(_SIGNALS, now, strict=True):
            marked = _MARKED.get(sig, handler)
            if marked is not handler and handler not in (signal.SIG_DFL, signal.SIG_IGN) and not _lightnings(handler):
                violation(f"installed a handler for {signal.Signals(sig).name} in {where}: work a signal handler does "
                          "runs outside the meter's count")
                _restore(sig, marked)  # refused: the handler is taken away again
        mark_signals()
    for timer in _TIMERS:
        if signal.getitimer(timer) != (0.0, 0.0):
            violation(f"armed an interval timer in {where}: its signal's handler would run uncounted")
            signal.setitimer(timer, 0.0, 0.0)


def _from_lightning(function: Any) -> bool:
    owner = getattr(function, "__self__", None)
    module = type(owner).__module__ if owner is not None else getattr(function, "__module__", "") or ""
    return module.startswith(("lightning.", "pytorch_lightning."))


def _lightnings(handler: Any) -> bool:
    """Lightning's own handlers (its signal connector's, registered at the start of a fit)."""
    inner = getattr(handler, "signal_handlers", None)
    return type(handler).__module__.startswith("lightning.") and isinstance(inner, list) and all(map(_from_lightning, inner))


def _restore(sig: int, handler: Any) -> None:
    try:
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    except (ValueError, OSError, TypeError):
        pass


# -- raw threads -----------------------------------------------------------------------------------
_ORIGINAL_START = _thread.start_new_thread
_RAW_LIVE = [0]


def arm_raw_threads(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Threads started through `_thread.start_new_thread` (the module attribute) run `wrap(function)`:
    the meter counts their work as it counts `threading`'s."""

    def start_new_thread(function: Callable[..., Any], args: tuple = (), kwargs: dict | None = None) -> int:
        counted = wrap(function)

        def run(*a: Any, **k: Any) -> None:
            _RAW_LIVE[0] += 1
            try:
                counted(*a, **k)
            finally:
                _RAW_LIVE[0] -= 1

        return _ORIGINAL_START(run, args, kwargs or {})

    if getattr(_thread.start_new_thread, "__name__", "") != "start_new_thread" or _thread.start_new_thread is _ORIGINAL_START:
        _thread.start_new_thread = start_new_thread  # type: ignore[assignment]
        _thread.start_new = start_new_thread  # type: ignore[attr-defined]


def raw_threads_running() -> int:
    """Python threads running that neither `threading` nor the counted `_thread` entry started."""
    known = sum(1 for t in threading.enumerate() if t is not threading.main_thread() and not isinstance(t, threading._DummyThread))
    return max(0, _thread._count() - known - _RAW_LIVE[0])


_RAW_MARKED = [0]


def mark_threads() -> None:
    """Take the raw threads running now (a test runner's or a library's I/O threads) as the reference."""
    _RAW_MARKED[0] = raw_threads_running()


def check_threads(where: str) -> None:
    """Record a violation for a raw thread started since `mark_threads()` that the meter cannot count."""
    running = raw_threads_running()
    if running > _RAW_MARKED[0]:
        violation(f"started a thread the meter cannot count in {where} (`_thread.start_new_thread` bound before the "
                  "harness armed its counting): use threading.Thread")
    _RAW_MARKED[0] = running

