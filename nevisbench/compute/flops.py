"""The FLOP meter: compute accumulated per task and per stream, and the policy deciding which
training steps are counted. Plain Python; `nevisbench.run.task.metering` adapts it to Lightning.

Two FLOP measures are kept:
- `executed`: what the hardware ran (every matmul/conv/attention kernel, 2 FLOPs per multiply-add).
- `algorithmic`: executed, with each op that computes with a masked weight charged the mask's
  kept fraction (see `nevisbench.compute.masks`).

The pieces: `flop_rules` (what each op costs), `masks` (declared sparsity, structure signature),
`counter` (counting a window of ops, other threads, work outside the windows), this module (the
policy and the tallies). Counting has a per-op Python cost, so by default the meter caches a step's
cost under the model's structure signature and audits it; `meter.count=every_step` (the default
for third-party plugins) counts every step, so a plugin cannot tell counted steps from others.
docs/flop-meter.md states the policy and what the meter cannot see.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from nevisbench.compute import guard, native
from nevisbench.compute.counter import (
    ZERO,
    StepCounter,
    StepFlops,
    arm_threads,
    counting_outside,
    set_engine,
    take_pending,
)
from nevisbench.compute.flop_rules import conv_backward_flop
from nevisbench.compute.masks import mask_densities, structure_signature
from nevisbench.errors import ConfigError, choice_error

__all__ = [
    "StepFlops", "FlopTally", "FlopMeter", "StepCounter", "conv_backward_flop", "mask_densities",
    "structure_signature", "KINDS", "ZERO", "COUNT_MODES", "meter_options", "arm_threads", "counting_outside",
    "take_pending", "meter_engine",
]

KINDS = ("train", "eval", "search")
COUNT_MODES = ("auto", "every_step", "cached")


def meter_options(meter_cfg: Any, learner_class: type | None) -> tuple[bool, int]:
    """(every_step, audit_every) for the config's `meter` section and the learner's class.

    `meter.count=auto` counts every step for a plugin from outside nevisbench (a plugin could
    otherwise behave differently on the steps it sees counted) and caches for the harness's own
    learners, whose costs the test suite pins."""
    count = getattr(meter_cfg, "count", "auto") if meter_cfg is not None else "auto"
    audit_every = int(getattr(meter_cfg, "audit_every", 32)) if meter_cfg is not None else 32
    if count not in COUNT_MODES:
        raise choice_error("value for 'meter.count':", count, COUNT_MODES)
    if audit_every < 1:
        raise ConfigError(f"Invalid value for 'meter.audit_every': {audit_every}; it must be >= 1")
    builtin = learner_class is not None and learner_class.__module__.startswith("nevisbench.")
    every_step = count == "every_step" or (count == "auto" and not builtin)
    return every_step, 1 if every_step else audit_every


def meter_engine(meter_cfg: Any, learner_class: type | None) -> tuple[str, int]:
    """(engine, audit_every) of a run: `meter_options`, and what counts ops (`meter.engine`, see
    `native.choose_engine`), set for every counter made from now on. A `native` engine that cannot
    be built here is a one-line ConfigError."""
    every_step, audit_every = meter_options(meter_cfg, learner_class)
    try:
        name = native.choose_engine(str(getattr(meter_cfg, "engine", "auto")) if meter_cfg is not None else "auto", every_step)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    set_engine(name)
    return name, audit_every


@dataclass
class FlopTally:
    """Accumulated compute by kind: algorithmic FLOPs (the default measure), executed FLOPs, seconds."""

    train_forward: float = 0.0
    train_backward: float = 0.0
    eval: float = 0.0
    search: float = 0.0
    executed_train_forward: float = 0.0
    executed_train_backward: float = 0.0
    executed_eval: float = 0.0
    executed_search: float = 0.0
    seconds_train: float = 0.0
    seconds_eval: float = 0.0
    seconds_search: float = 0.0
    outside: float = 0.0  # executed FLOPs counted outside the windows (hooks, threads), in train
    moved_from_eval: float = 0.0  # executed FLOPs of training work inside evaluation, in train
    seconds_compile: float = 0.0  # torch.compile's compilations (trainer.compile=true), outside the kinds' seconds

    @property
    def train(self) -> float:
        return self.train_forward + self.train_backward

    @property
    def executed_train(self) -> float:
        return self.executed_train_forward + self.executed_train_backward

    @property
    def total(self) -> float:
        return self.train + self.eval + self.search

    def measure(self, measure: str, kind: str = "total") -> float:
        """`measure` in algorithmic | executed | seconds; `kind` in train | eval | search | total."""
        prefix = {"algorithmic": "", "executed": "executed_", "seconds": "seconds_"}[measure]
        if kind == "total":
            return sum(self.measure(measure, k) for k in KINDS)
        if kind == "train" and measure != "seconds":
            return getattr(self, f"{prefix}train_forward") + getattr(self, f"{prefix}train_backward")
        return getattr(self, f"{prefix}{kind}")

    def as_dict(self) -> dict[str, Any]:
        """The `flops` object of a results line (algorithmic), with executed FLOPs and seconds."""
        return {
            "train": self.train, "eval": self.eval, "search": self.search, "total": self.total,
            "train_forward": self.train_forward, "train_backward": self.train_backward,
            "executed": {k: self.measure("executed", k) for k in (*KINDS, "total")}
            | {"train_forward": self.executed_train_forward, "train_backward": self.executed_train_backward},
            "seconds": {k: self.measure("seconds", k) for k in (*KINDS, "total")} | {"compile": self.seconds_compile},
        } | {k: getattr(self, k) for k in ("outside", "moved_from_eval") if getattr(self, k)}

    def add(self, other: FlopTally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> FlopTally:
        out = FlopTally()
        out.add(self)
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        guard.write(self, name, value)  # a run's tallies: only the harness writes them


@dataclass
class _SignatureCost:
    cost: StepFlops  # the whole step, as last counted
    stable: bool = False  # two consecutive counted steps of this signature agreed
    uncounted: int = 0  # steps charged from the cache since the last count


@dataclass
class FlopMeter:
    """Per-task and cumulative compute, and the policy deciding which training steps are counted.

    Policy (per task; `start_task` forgets everything): a step whose structure signature is new is
    counted; counting continues, step after step, until two consecutive counted steps of the
    signature cost the same (a cheap first step, or work done only every other step, is never
    cached); then steps are charged the cached cost, except every `audit_every`-th step, which is
    counted again: if it disagrees, the signature is counted every step until two agree again.
    `audit_every=1` counts every step (exact for any learner, at the counting overhead).
    """

    task: FlopTally = field(default_factory=FlopTally)
    stream: FlopTally = field(default_factory=FlopTally)
    audit_every: int = 32
    _per_sample: dict[Hashable, StepFlops] = field(default_factory=dict)
    _train: dict[Hashable, _SignatureCost] = field(default_factory=dict)
    _eval: dict[Hashable, _SignatureCost] = field(default_factory=dict)  # per-sample costs of eval batches
    active: StepCounter | None = None  # the counter of the training window in progress, if any
    counted_steps: int = 0  # training steps counted in this task (the rest came from the cache)
    cost_changes: int = 0  # times the cost charged per training step changed in this task
    last_train_cost: StepFlops | None = None  # the latest counted whole training step
    fits: int = 0  # Lightning fits metered so far (every task, cumulative: the time audit takes differences)
    eval_batches: int = 0  # evaluation batches charged so far (cumulative)

    def start_task(self) -> None:
        """A new task may bring a new model structure: forget cached counts."""
        self._per_sample.clear()
        self._train.clear()
        self._eval.clear()
        self.task = FlopTally()
        self.counted_steps = self.cost_changes = 0
        self.last_train_cost = None
        self.charge_outside()  # e.g. the learner's begin_task, run before the task's meter starts

    def end_task(self) -> FlopTally:
        self.charge_outside()  # e.g. the learner's end_task and state_dict
        self.stream.add(self.task)
        return self.task

    def charge_outside(self) -> None:
        """Charge to training the work counted outside the windows (plugin hooks between tasks,
        other threads while no training window was open) since the last call."""
        pending = take_pending()
        if pending.forward or pending.backward:
            self.charge_train_step(pending)
            self.task.outside += pending.forward + pending.backward

    # -- evaluation (and search): the training policy, per sample, by the batch's structure signature
    def cached_eval(self, signature: Hashable) -> StepFlops | None:
        """The per-sample cost to charge an evaluation batch of `signature` without counting it, or
        None when this batch must be counted: a new signature, one whose counts have not agreed twice
        in a row yet, or an audit (every `audit_every`-th batch)."""
        entry = self._eval.get(signature)
        if entry is None or not entry.stable or entry.uncounted + 1 >= self.audit_every:
            return None
        entry.uncounted += 1
        return entry.cost

    def counted_eval(self, signature: Hashable, per_sample: StepFlops) -> StepFlops:
        """Record the counted per-sample cost of an evaluation batch of `signature`."""
        entry = self._eval.get(signature)
        if entry is None or entry.cost != per_sample:
            self._eval[signature] = _SignatureCost(per_sample)
        else:
            entry.stable, entry.uncounted = True, 0
        return per_sample

    def cached(self, key: Hashable) -> StepFlops | None:
        return self._per_sample.get(key)

    def store(self, key: Hashable, per_sample: StepFlops) -> StepFlops:
        self._per_sample[key] = per_sample
        return per_sample

    # -- training: the counting policy --------------------------------------------------------------
    def should_count(self, signature: Hashable) -> bool:
        entry = self._train.get(signature)
        if entry is None or not entry.stable:
            return True
        return entry.uncounted + 1 >= self.audit_every

    def counted(self, signature: Hashable, cost: StepFlops) -> None:
        """Record the counted cost of a whole training step (already charged by the caller)."""
        entry = self._train.get(signature)
        if entry is None and self._train:
            # the model changed mid-task: evaluation counts cached by shape may be stale too
            self._per_sample = {k: v for k, v in self._per_sample.items() if not (isinstance(k, tuple) and k[:1] == ("eval",))}
        if entry is None or entry.cost != cost:
            self.cost_changes += entry is not None or bool(self._train)
            self._train[signature] = _SignatureCost(cost)
        else:
            entry.stable, entry.uncounted = True, 0
        self.counted_steps += 1
        self.last_train_cost = cost

    def cached_step(self, signature: Hashable) -> StepFlops:
        """The cost to charge an uncounted step of `signature` (its last counted cost)."""
        entry = self._train[signature]
        entry.uncounted += 1
        return entry.cost

    def step_cost(self, measure: str) -> float | None:
        """Training FLOPs (in `measure`) of the latest fully counted step; None before the first."""
        return None if self.last_train_cost is None else self.last_train_cost.measure(measure)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside is not charged to the training window in progress (e.g. the harness's own
        milestone evaluation, which is charged to evaluation). Only the harness pauses: a pause from
        anywhere else is recorded (the task is refused) and counting goes on."""
        if self.active is None or not guard.check_pause_caller():
            yield
        else:
            with self.active.pause():
                yield

    # -- charging ---------------------------------------------------------------------------------------
    def charge_train_step(self, step: StepFlops) -> None:
        """Charge `step` (whole-step FLOPs, not per sample) to training."""
        self.charge_train(step, 1)

    def charge_train(self, per_sample: StepFlops, batch_size: int) -> None:
        t = self.task
        t.train_forward += per_sample.algo_forward * batch_size
        t.train_backward += per_sample.algo_backward * batch_size
        t.executed_train_forward += per_sample.forward * batch_size
        t.executed_train_backward += per_sample.backward * batch_size

    def charge_eval(self, per_sample: StepFlops, batch_size: int, *, kind: str = "eval") -> None:
        """Charge an evaluation batch. Training work inside it (backward ops, forward ops that built
        a graph, or all of it when the batch wrote the model's weights) goes to training."""
        self.eval_batches += 1
        trained = per_sample.train_like + per_sample.backward
        if trained:
            share = per_sample.algo_forward / per_sample.forward if per_sample.forward else 1.0
            self.charge_train(StepFlops(per_sample.train_like, per_sample.backward,
                                        per_sample.train_like * share, per_sample.algo_backward), batch_size)
            self.task.moved_from_eval += trained * batch_size
            per_sample = StepFlops(per_sample.forward - per_sample.train_like, 0.0,
                                   per_sample.algo_forward - per_sample.train_like * share, 0.0)
        setattr(self.task, kind, getattr(self.task, kind) + (per_sample.algo_forward + per_sample.algo_backward) * batch_size)
        executed = f"executed_{kind}"
        setattr(self.task, executed, getattr(self.task, executed) + per_sample.forward * batch_size + per_sample.backward * batch_size)

    def charge_seconds(self, kind: str, seconds: float) -> None:
        setattr(self.task, f"seconds_{kind}", getattr(self.task, f"seconds_{kind}") + seconds)

    def __setattr__(self, name: str, value: Any) -> None:
        guard.write(self, name, value)  # a run's meter: only the harness writes it
        if name in ("task", "stream") and guard.watched(self) and isinstance(value, FlopTally):
            guard.watch(value)

    def watch(self) -> FlopMeter:
        """Judge from now on who writes this meter and its tallies (`guard.write`): a run's meter."""
        for obj in (self, self.task, self.stream):
            guard.watch(obj)
        return self

    def unsealed(self) -> list[str]:
        """Writes to the meter or its tallies that went around `__setattr__` (see `guard.unsealed`)."""
        return guard.unsealed(self, self.task, self.stream)

    @property
    def cumulative(self) -> FlopTally:
        """Stream total including the task in progress."""
        total = self.stream.copy()
        total.add(self.task)
        return total


guard.protect(FlopMeter)
guard.protect(FlopTally)
