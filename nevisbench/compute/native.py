"""The FLOP meter's native engine: `NativeCountingMode` counts what `flop_rules.CountingMode` counts,
through a dispatcher fallback in C++ (`native_counter.cpp`) instead of a Python dispatch mode.

Why: a Python dispatch mode costs every op a trip through the interpreter (~24 us on this CPU, 297
ops per ResNet-18 training step: 9% of a 32 px step before the meter does anything). The native
fallback handles the ops without a FLOP rule in C++ (their bytes moved, for the time audit), counts
convolutions, their backward, mm and addmm in C++ by the formulas of `flop_rules` (summed per
window, taken by `flush`), and calls Python for the other ops with a rule, and for every counted op
of a counter with masks, with the arguments `__torch_dispatch__` would get, so the same rules count
them. docs/flop-meter.md has the design and the measurements.

The extension is compiled once per machine and torch version (torch.utils.cpp_extension, ~25 s,
cached under ~/.cache/torch_extensions); where it cannot be built (no compiler, another torch)
`meter.engine=auto` keeps the Python mode and says why once. `choose_engine` picks per run.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nevisbench.compute import flop_rules, guard
from nevisbench.compute.flop_rules import _ALIASES, _METADATA

_aten = torch.ops.aten
# packet -> (the rule's number in native_counter.cpp, the Python formula it equals)
_NATIVE_RULES = {_aten.convolution: (1, flop_rules._conv), _aten._convolution: (1, flop_rules._conv),
                 _aten.convolution_backward: (2, flop_rules._conv_backward), _aten.mm: (3, flop_rules._mm),
                 _aten.addmm: (4, flop_rules._addmm), _aten._to_copy: (5, flop_rules.zero_flops)}

__all__ = ["ENGINES", "NativeCountingMode", "arm_key_guard", "available", "choose_engine", "flush", "moved", "refresh",
           "unavailable_reason"]

ENGINES = ("auto", "native", "python")
_SOURCE = Path(__file__).with_name("native_counter.cpp")
_LOG = logging.getLogger("nevisbench")
_EXT: Any = None
_REASON: str | None = None  # why the extension is not available, once tried
_LOCAL = threading.local()  # .modes (this thread's entered native modes), .window, .included
_WINDOWS: dict[int, list[NativeCountingMode]] = {}  # window id -> the modes of the thread that opened it
_IDS = itertools.count(1)
_OPS: dict[int, Any] = {}  # the extension's op index -> OpOverloadPacket
_CONFIGURED: list[dict] = []  # the table the extension was configured with


def _build() -> Any:
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on every CPU machine
    level, quiet.level = quiet.level, logging.ERROR
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    name = "nevisbench_native_counter"
    built = Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so"
    if not built.exists() or built.stat().st_mtime < _SOURCE.stat().st_mtime:
        _LOG.warning("Building the FLOP meter's native counter (once per machine and torch version, ~25 s) ...")
    start = time.perf_counter()
    quiet.setLevel(logging.ERROR)
    try:
        ext = cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=["-O2"], verbose=False)
    finally:
        quiet.setLevel(level)
    if time.perf_counter() - start > 2:
        _LOG.warning("... built in %.0f s.", time.perf_counter() - start)
    return ext


def _load() -> Any:
    """The extension; None (and `_REASON`) where it cannot be built or loaded."""
    global _EXT, _REASON
    if _EXT is not None or _REASON is not None:
        return _EXT
    try:
        _EXT = _build()
    except Exception as exc:  # no compiler, headers of another torch, a key already taken: the Python mode counts
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        _REASON = next((line.strip() for line in lines if "error:" in line), lines[-1])[:300]
    return _EXT


def _configure(table: dict) -> None:
    """Tell the extension which ops have a FLOP rule (`table`'s) and which pass untouched (once)."""
    if _CONFIGURED:
        return
    counted = sorted({packet._qualified_op_name for packet in table if hasattr(packet, "_qualified_op_name")})
    passed = sorted({op._schema.name for op in _METADATA} | {packet._qualified_op_name for packet in _ALIASES})
    # the rules native_counter.cpp also has, where `table` uses exactly those (else Python counts each op)
    native = {packet._qualified_op_name: rule for packet, (rule, formula) in _NATIVE_RULES.items() if table.get(packet) is formula}
    _EXT.configure(counted, passed, native, _on_counted)
    _CONFIGURED.append(table)


def available() -> bool:
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _REASON


def choose_engine(engine: str, every_step: bool) -> str:
    """The engine a run counts with: `python`, or `native` (asked for, or `auto` where every step is
    counted and the extension builds). Raises ValueError for `native` where it cannot be built."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown value for 'meter.engine': {engine!r}. Valid: {', '.join(ENGINES)}.")
    if engine == "python" or (engine == "auto" and not every_step):
        return "python"
    if available():
        return "native"
    if engine == "native":
        raise ValueError(f"meter.engine=native: the native counter cannot be built here ({_REASON}). "
                         "Use meter.engine=auto or python (the Python dispatch mode counts the same).")
    _LOG.warning("The FLOP meter's native counter is not available (%s): counting with the Python dispatch "
                 "mode (the same counts, ~10%% slower steps on small models).", _REASON)
    return "python"


def _packet(index: int) -> Any:
    packet = _OPS.get(index)
    if packet is None:
        name, _overload = _EXT.op_name(index)
        namespace, _, op = name.partition("::")
        packet = _OPS[index] = getattr(getattr(torch.ops, namespace), op)
    return packet


def _on_counted(window: int, index: int, args: tuple, kwargs: dict, out: Any) -> None:
    """An op with a FLOP rule ran in `window`: each mode of the thread that opened it reports it."""
    modes = _WINDOWS.get(window)
    if not modes:
        return
    packet = _packet(index)
    for mode in list(modes):
        formula = mode.table.get(packet)
        if formula is not None:
            mode.report(packet, formula, args, kwargs, out)


def _modes() -> list[NativeCountingMode]:
    try:
        return _LOCAL.modes
    except AttributeError:
        _LOCAL.modes = []
        return _LOCAL.modes


def refresh() -> None:
    """Tell this thread's window what its modes want now (after a counter paused, or one entered or
    left): bytes moved (a counter audits them now), and whether C++ may sum the ops it has rules for."""
    modes = _modes()
    if modes and _EXT is not None:
        _EXT.want(any(mode.moved is not None and mode.gate() for mode in modes), all(mode.fast() for mode in modes))


def flush() -> None:
    """Hand the sums C++ made in this thread's window since the last flush to the modes counting now.
    Called before anything changes which counters count (a counter entered, left or paused) and
    before a counter's totals are read, so the sums always belong to the counters that counted them."""
    modes = _modes()
    if not modes or _EXT is None:
        return
    forward, backward, train_like, ops = _EXT.take()
    if ops:
        for mode in list(modes):
            if mode.gate():
                mode.absorb(float(forward), float(backward), float(train_like), ops)


def moved() -> tuple[float, int]:
    """(bytes, ops) the native engine has seen move in ops without a FLOP rule, process-wide, so far."""
    if _EXT is None:
        return 0.0, 0
    nbytes, ops = _EXT.moved()
    return float(nbytes), int(ops)


class NativeCountingMode:
    """The native engine's stand-in for `CountingMode` (its arguments, and: `gate()`, whether the counter
    counts now (not paused, not hidden by a charging counter inside it); `fast()`, whether C++ may sum
    its ops; `absorb(forward, backward, train_like, ops)`, takes such sums). Entered modes of one
    thread share its window."""

    def __init__(self, table: dict, report: Callable[..., None], moved: Callable[..., None] | None,
                 gate: Callable[[], bool], fast: Callable[[], bool], absorb: Callable[[float, float, float, int], None]) -> None:
        if _load() is None:
            raise RuntimeError(f"the FLOP meter's native counter is not available: {_REASON}")
        _configure(table)
        arm_key_guard()
        self.table, self.report, self.moved, self.gate, self.fast, self.absorb = table, report, moved, gate, fast, absorb

    def __enter__(self) -> NativeCountingMode:
        modes = _modes()
        if not modes:
            window = next(_IDS)
            _WINDOWS[window] = modes
            _LOCAL.window = window
            _LOCAL.included = _EXT.open(window)
        modes.append(self)
        refresh()
        return self

    def __exit__(self, *exc: Any) -> None:
        modes = _modes()
        if self in modes:
            modes.remove(self)
        if modes:
            refresh()
            return
        window = getattr(_LOCAL, "window", None)
        if window is not None:
            _EXT.close(_LOCAL.included)
            _WINDOWS.pop(window, None)
            _LOCAL.window = None

    def missing(self) -> bool:
        """Whether this thread's ops are no longer counted into this mode's window."""
        window = getattr(_LOCAL, "window", None)
        return self not in _modes() or window is None or _EXT.armed() != window


# -- the key switched off ----------------------------------------------------------------------------
# torch's Python handles on the thread's dispatch-key sets: each could take the native engine's key
# out of the included set (or put it in the excluded one), and the ops run inside would not be
# counted. Each is wrapped: after it acts, a thread with a window open must still be counted into
# it, or the switch is recorded (the task is refused). A switch made and undone inside one C++ call
# is not seen here: the time audit is there for it.
_SWITCHES = ("_dispatch_tls_set_dispatch_key_excluded", "_dispatch_tls_set_dispatch_key_included")
_GUARDS = ("_ExcludeDispatchKeyGuard", "ExcludeDispatchKeyGuard", "_ForceDispatchKeyGuard", "_SetExcludeDispatchKeyGuard")


def _check_armed() -> None:
    window = getattr(_LOCAL, "window", None)
    if window is not None and _EXT is not None and _EXT.armed() != window:
        _module, where = guard._caller(3)
        guard.violation(f"switched off the FLOP meter's dispatcher key (at {where}): ops run without it are not counted")


def _watched_switch(original: Callable[..., Any]) -> Callable[..., Any]:
    def switch(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _check_armed()
        return result

    switch.__wrapped__ = original  # type: ignore[attr-defined]
    return switch


class _WatchedGuard:
    """One of torch's dispatch-key guards, made and used as itself; entering it is checked."""

    original: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._guard = self.original(*args, **kwargs)
        _check_armed()  # a guard that acts when made

    def __enter__(self) -> Any:
        entered = self._guard.__enter__()
        _check_armed()
        return entered

    def __exit__(self, *exc: Any) -> Any:
        return self._guard.__exit__(*exc)


def arm_key_guard() -> None:
    """Wrap torch's dispatch-key switches (idempotent). Armed before a third-party learner's module is
    imported (`registry.get_learner_class`), so that a plugin binding one by name at import binds the
    wrapper, and by the native engine when first used."""
    for name in _SWITCHES:
        original = getattr(torch._C, name, None)
        if original is not None and not hasattr(original, "__wrapped__"):
            setattr(torch._C, name, _watched_switch(original))
    for name in _GUARDS:
        original = getattr(torch._C, name, None)
        if isinstance(original, type) and not issubclass(original, _WatchedGuard):
            setattr(torch._C, name, type(name, (_WatchedGuard,), {"original": original}))
