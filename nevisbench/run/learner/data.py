"""The data a learner may draw from: the training split of the current task and of every earlier
task of the stream, never a dev or test split and never a task the stream has not reached.

The harness owns the data (DESIGN §11). A learner reaches it through `self.context.data`, a
`StreamData`, so replay (ER, DER), exemplar memories (iCaRL-style) or distillation sets need no
tricks: keep example *indices* in the learner's `state_dict` (small, saved and restored by resume)
and draw their images again with `train_examples`. Every tensor handed out is a fresh copy, so a
learner cannot change the stream's data. Whatever flows through the model is charged like any
other compute: in `training_step` as training, in `end_task` as the meter charges that hook.

A learner holds a `LearnerData` (`StreamData.for_learner()`): the four draws and nothing else, so
it cannot move the stream on (`enter` is the runner's) to see a task before that task starts.
Indices are integer lists or integer arrays (numpy, torch) within the split; anything else (floats,
a boolean mask, nested lists) is refused in one line instead of being cast.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import torch
from omegaconf import DictConfig

from nevisbench.api.types import TaskInfo, task_seed
from nevisbench.errors import PluginError
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import BatchLoader, TaskData

__all__ = ["StreamData", "LearnerData"]


def _picks(indices: object, n: int, key: str) -> torch.Tensor:
    """`indices` as a long tensor, refused unless it is integers (a list, tuple, range, numpy or
    torch integer array; never bool, float or nested) within 0..n-1."""
    import numpy as np

    where = f"context.data.train_examples: indices for task {key!r}"
    if isinstance(indices, (torch.Tensor, np.ndarray)):
        kind = indices.dtype
        if isinstance(indices, torch.Tensor):
            integer = not indices.is_floating_point() and not indices.is_complex() and kind != torch.bool
        else:
            integer = indices.dtype.kind in "iu"
        if not integer:
            raise PluginError(f"{where} must be integers (a list or an integer array), got an array of {kind}")
        values = [int(v) for v in indices.reshape(-1).tolist()]
    elif isinstance(indices, (list, tuple, range)):
        bad = [v for v in indices if isinstance(v, (bool, np.bool_)) or not isinstance(v, Integral)][:1]
        if bad:
            raise PluginError(f"{where} must be integers (a list or an integer array), got {type(bad[0]).__name__} "
                              f"{bad[0]!r:.40}")
        values = [int(v) for v in indices]
    else:
        raise PluginError(f"{where} must be a list or an integer array, got {type(indices).__name__}")
    if values and (min(values) < 0 or max(values) >= n):
        raise PluginError(f"context.data.train_examples: indices must lie in 0..{n - 1} for task "
                          f"{key!r}, got {min(values)}..{max(values)}")
    return torch.tensor(values, dtype=torch.long)


class StreamData:
    """Read-only access to the training examples of the tasks seen so far (`context.data`).

    Tasks are named by their `TaskInfo` or their index in the stream. Images come back as float
    tensors normalised as the harness trains on them (optionally with the protocol's random crop
    and flip), labels as the task's label tensor; on the CPU unless `device` is given.
    """

    _KEEP = 2  # earlier tasks kept loaded at once (the current one is always at hand)

    def __init__(self, cfg: DictConfig, specs: Sequence[TaskSpec], *,
                 load: Callable[[TaskSpec, int], TaskData] | None = None) -> None:
        self._cfg = cfg
        self._specs = tuple(specs)
        self._load = load or self._load_spec
        self._current = -1
        self._loaded: OrderedDict[int, TaskData] = OrderedDict()

    # -- driven by the runner (never handed to a learner: see `for_learner`) -----------------------
    def enter(self, index: int, data: TaskData | None = None) -> None:
        """The stream has reached task `index` (its data, when the runner already loaded it)."""
        self._current = index
        if data is not None:
            self._remember(index, data)

    def for_learner(self) -> LearnerData:
        """What a learner holds as `context.data`: the draws, without `enter`."""
        return LearnerData(self)

    def task_data(self, index: int) -> TaskData:
        """Every split of a task the stream has reached (the harness's revisit evaluation)."""
        return self._data(self._index(index))

    # -- what a learner calls ------------------------------------------------------------------
    def tasks(self) -> list[TaskInfo]:
        """The tasks whose training data may be drawn: every earlier task and the current one."""
        return [self._info(i) for i in range(self._current + 1)]

    def num_train(self, task: TaskInfo | int) -> int:
        """How many training examples `task` has."""
        return len(self._data(self._index(task)).train)

    def train_batch(self, task: TaskInfo | int, batch_size: int, *, generator: torch.Generator | None = None,
                    augment: bool = True, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` training examples of `task` drawn at random without replacement (all of them
        when the split is smaller), from `generator` (torch's default generator when None)."""
        index = self._index(task)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise PluginError(f"context.data.train_batch: batch_size must be a positive int, got {batch_size!r}")
        n = self.num_train(index)
        picks = torch.randperm(n, generator=generator)[: min(batch_size, n)]
        return self._examples(index, picks, augment=augment, generator=generator, device=device)

    def train_examples(self, task: TaskInfo | int, indices: Sequence[int] | torch.Tensor, *, augment: bool = False,
                       generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The training examples of `task` at `indices` (positions in its training split, 0-based),
        e.g. an exemplar memory kept as indices in the learner's state."""
        index = self._index(task)
        picks = _picks(indices, self.num_train(index), self._specs[index].key)
        return self._examples(index, picks, augment=augment, generator=generator, device=device)

    # -- inside ----------------------------------------------------------------------------------
    def _index(self, task: TaskInfo | int) -> int:
        index = task.index if isinstance(task, TaskInfo) else task
        if not isinstance(index, int) or isinstance(index, bool):
            raise PluginError(f"context.data: a task is a TaskInfo or a task index, got {task!r}")
        if not 0 <= index <= self._current:
            seen = ", ".join(f"{i}={s.key}" for i, s in enumerate(self._specs[: self._current + 1])) or "none yet"
            raise PluginError(f"context.data: task {index} is not available to the learner (it may draw from the "
                              f"current task and earlier ones: {seen}; never a task the stream has not reached)")
        return index

    def _info(self, index: int) -> TaskInfo:
        spec = self._specs[index]
        return TaskInfo(key=spec.key, name=spec.name, index=index, domain=spec.domain,
                        num_classes=spec.num_classes, multi_label=spec.multi_label)

    def _data(self, index: int) -> TaskData:
        if index not in self._loaded:
            self._remember(index, self._load(self._specs[index], task_seed(int(self._cfg.seed), index)))
        self._loaded.move_to_end(index)
        return self._loaded[index]

    def _remember(self, index: int, data: TaskData) -> None:
        self._loaded[index] = data
        self._loaded.move_to_end(index)
        while len(self._loaded) > self._KEEP + 1:
            oldest = next(i for i in self._loaded if i != self._current)
            del self._loaded[oldest]

    def _examples(self, index: int, picks: torch.Tensor, *, augment: bool, generator: torch.Generator | None,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._data(index)
        split = data.train
        protocol = self._cfg.protocol
        loader = BatchLoader(split, batch_size=max(1, int(picks.numel())), image_size=int(self._cfg.data.image_size),
                             train=True, augment=augment, device="cpu",
                             hflip=True if protocol.flip == "all" else data.hflip,
                             min_crop_scale=float(self._cfg.data.min_crop_scale),
                             crop_fallback=protocol.crop_fallback)
        images = split.images[picks]
        draws = torch.rand(len(picks), 5, generator=generator) if augment and len(picks) else None
        x = loader._transform(images, draws)
        return x.to(device), split.labels[picks].clone().to(device)

    def _load_spec(self, spec: TaskSpec, seed: int) -> TaskData:
        data = spec.load(root=os.path.expanduser(self._cfg.data.root), image_size=self._cfg.data.image_size, seed=seed)
        data.validate()
        return data

    def __repr__(self) -> str:  # never dump tensors into an error message
        return f"StreamData(current task {self._current}, {len(self._specs)} tasks)"

    def __deepcopy__(self, memo: dict[int, Any]) -> StreamData:  # one stream, however often a learner is copied
        return self

    def __getstate__(self) -> dict[str, Any]:  # a search worker's kit: the stream, not its loaded data
        return {"cfg": self._cfg, "specs": self._specs, "current": self._current}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cfg"], state["specs"])  # type: ignore[misc]
        self._current = state["current"]


class LearnerData:
    """`context.data` as a learner holds it: the draws of `StreamData` (tasks, num_train,
    train_batch, train_examples) and nothing that moves the stream on."""

    __slots__ = ("_stream",)

    def __init__(self, stream: StreamData) -> None:
        self._stream = stream

    def tasks(self) -> list[TaskInfo]:
        return self._stream.tasks()

    def num_train(self, task: TaskInfo | int) -> int:
        return self._stream.num_train(task)

    def train_batch(self, task: TaskInfo | int, batch_size: int, *, generator: torch.Generator | None = None,
                    augment: bool = True, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self._stream.train_batch(task, batch_size, generator=generator, augment=augment, device=device)

    def train_examples(self, task: TaskInfo | int, indices: Sequence[int] | torch.Tensor, *, augment: bool = False,
                       generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self._stream.train_examples(task, indices, augment=augment, generator=generator, device=device)

    tasks.__doc__, num_train.__doc__ = StreamData.tasks.__doc__, StreamData.num_train.__doc__
    train_batch.__doc__, train_examples.__doc__ = StreamData.train_batch.__doc__, StreamData.train_examples.__doc__

    def __repr__(self) -> str:
        return repr(self._stream)

    def __deepcopy__(self, memo: dict[int, Any]) -> LearnerData:  # one stream, however often a learner is copied
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # a search worker's kit: the stream's handle
        return (LearnerData, (self._stream,))
