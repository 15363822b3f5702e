"""`trainer.compile=true`: the task module compiled with torch.compile (inductor), with the facts
that make it checkable: how long compiling took, and how many steps really ran compiled.

FLOPs are counted eagerly: a counted step or evaluation batch runs under the counter's
`torch.compiler.set_stance("force_eager")` (see `nevisbench.compute.flops.StepCounter`), because
a compiled graph bypasses the dispatcher the counter listens to. Under that stance Dynamo does not
look at the frame at all, so a frame first run while the counter is active is not marked to be
skipped: the next uncounted step compiles it and every uncounted step after runs the compiled
graph (tests/test_compile.py checks both, and that the counts equal an eager run's).

Process-wide clocks and counters (this module is the only owner of Dynamo's compile callbacks):
- `seconds()`: wall seconds spent compiling (Dynamo tracing, inductor code generation, the lazy
  backward compile), read by the schedule and the evaluation to report compile time apart from
  training and evaluation time (`seconds.compile` of a results line);
- `graph_calls()`: forward calls of compiled graphs; `CompiledStepCallback` turns them into the
  number of training steps that ran compiled (`stats()`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

__all__ = ["compile_module", "seconds", "graph_calls", "stats", "reset_stats", "add_listener", "remove_listener",
           "CompiledStepCallback"]

_lock = threading.Lock()
_state: dict[str, Any] = {"seconds": 0.0, "since": None, "calls": 0, "compiled_steps": 0, "eager_steps": 0,
                          "compiles": 0, "installed": False}
_listeners: list[Callable[[bool], None]] = []
BACKEND = "inductor"  # what `compile_module` compiles with (tests may choose a cheaper backend)


def seconds() -> float:
    """Wall seconds this process has spent compiling, including a compile in progress."""
    with _lock:
        since = _state["since"]
        return _state["seconds"] + (time.perf_counter() - since if since is not None else 0.0)


def graph_calls() -> int:
    """Forward calls of graphs compiled by `compile_module` in this process."""
    return int(_state["calls"])


def stats() -> dict[str, float]:
    """Compile seconds, compilations, and the training steps that ran compiled / eager."""
    return {"compile_seconds": seconds(), "compiles": _state["compiles"], "graph_calls": graph_calls(),
            "compiled_steps": _state["compiled_steps"], "eager_steps": _state["eager_steps"]}


def reset_stats() -> None:
    with _lock:
        _state.update(calls=0, compiled_steps=0, eager_steps=0, compiles=0)


def add_listener(listener: Callable[[bool], None]) -> None:
    """`listener(True)` when a compilation starts, `listener(False)` when it ends."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Callable[[bool], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _started(_args: Any) -> None:
    with _lock:
        _state["since"] = time.perf_counter()
        _state["compiles"] += 1
    for listener in list(_listeners):
        listener(True)


def _ended(_args: Any) -> None:
    with _lock:
        if _state["since"] is not None:
            _state["seconds"] += time.perf_counter() - _state["since"]
        _state["since"] = None
    for listener in list(_listeners):
        listener(False)


def _install() -> None:
    """Register the compile clock with Dynamo's compile callbacks, once per process (Dynamo runs
    them once around a compilation, however nested: a trace, a lazy backward compile)."""
    with _lock:
        if _state["installed"]:
            return
        _state["installed"] = True
    from torch._dynamo.callback import on_compile_end, on_compile_start

    on_compile_start(_started)
    on_compile_end(_ended)


def _counting_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """`BACKEND` (inductor), with every call of the compiled forward graph counted."""
    from torch._dynamo.backends.registry import lookup_backend

    compiled = lookup_backend(BACKEND)(gm, example_inputs)

    def run(*args: Any) -> Any:
        _state["calls"] += 1
        return compiled(*args)

    return run


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    """Compile `module` in place (it keeps its type, names and parameters); returns it."""
    _install()
    module.compile(backend=_counting_backend)
    return module


class CompiledStepCallback(L.Callback):
    """Counts the training steps that ran a compiled graph and those that ran eagerly (the counted
    steps, under the FLOP counter's force_eager stance), in `stats()` and in `compiled`/`eager`
    for this fit. A step is read at its first backward (before any milestone evaluation at the
    step's end, whose own graph calls are not the step's), or at its end when it has no backward.

    `module.compile()` compiles the module's `forward` (what `module(x)` runs, and what the
    harness's evaluation runs). A learner whose `training_step` does not call it (e.g.
    learned_prune, which runs its gated blocks itself) trains eagerly: the fit then ends with a
    warning saying so, rather than the run claiming compiled training."""

    def __init__(self) -> None:
        self._calls = 0
        self._compiled: bool | None = None
        self.compiled = self.eager = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.compiled = self.eager = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._calls, self._compiled = graph_calls(), None

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._compiled is None:
            self._compiled = graph_calls() > self._calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        compiled = self._compiled if self._compiled is not None else graph_calls() > self._calls
        with _lock:
            _state["compiled_steps" if compiled else "eager_steps"] += 1
        if compiled:
            self.compiled += 1
        else:
            self.eager += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self.compiled == 0 and self.eager > 2:  # (the first two steps are counted, so eager, in any run)
            from lightning.fabric.utilities.rank_zero import rank_zero_warn

            rank_zero_warn(f"trainer.compile=true: none of the {self.eager} training steps ran compiled: "
                           f"{type(pl_module).__name__}.training_step does not call the module's forward "
                           "(module(x)), which is what is compiled; evaluation ran compiled")
