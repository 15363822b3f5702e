"""`gdumb`: GDumb (Prabhu, Torr and Dokania, ECCV 2020, "GDumb: A Simple Approach that Questions
Our Progress in Continual Learning"). A greedy sampler keeps a class-balanced memory of at most
`memory_size` examples as they stream past (a new class's example evicts one of the largest class
when the memory is full); the learner never trains on the stream itself, only on that memory, and
each task starts again from the stream's starting weights.

Written against nevisbench's public API only:
- the module opts in to `batch_indices`: each training batch is `(x, y, indices)`; the sampler reads
  the indices and labels (no compute) and the step trains on a batch drawn from the memory instead,
  so a step costs what a finetuning step costs (one forward and backward of `data.batch_size`
  images; only the heads differ);
- the memory is *per-step* state: it lives in module buffers (`memory_task`, `memory_index`,
  `memory_class`), so a mid-task checkpoint saves and restores it with the weights; between tasks it
  is the learner's `state_dict`, with the starting weights each task resets to;
- memory images come from the harness (`self.context.data.train_examples`); each task keeps its own
  head, and `revisit_module` scores an earlier task with the head the memory trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["GDumbConfig", "GDumbLearner", "GDumbModule"]


@dataclass
class GDumbConfig(LearnerConfig):
    name: str = "gdumb"
    memory_size: int = 200  # examples kept over the whole stream, balanced over every (task, class) seen
    batch_size: int = 0  # memory examples per step; 0: data.batch_size
    reset: bool = True  # each task starts again from the stream's starting weights and fresh heads (the paper)

    def validate(self) -> None:
        for key, least in (("memory_size", 1), ("batch_size", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected an integer >= {least}")
        if not isinstance(self.reset, bool):
            raise ConfigError(f"Invalid value for 'learner.reset': {self.reset!r}; expected true or false")


class GDumbModule(TaskModule):
    """The current task's module: every earlier task's head, the memory (buffers) and the memory step."""

    batch_indices = True  # training batches are (x, y, indices)

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, learner: GDumbLearner,
                 old_heads: dict[int, nn.Module]) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.old_heads = nn.ModuleDict({str(j): h for j, h in old_heads.items()})
        self.learner = [learner]  # a list: not a submodule, not in the checkpoint
        self.label_smoothing = float(train.label_smoothing)
        memory = learner.memory
        self.register_buffer("memory_task", memory["task"].clone())  # -1: an empty slot
        self.register_buffer("memory_index", memory["index"].clone())  # position in the task's training split
        self.register_buffer("memory_class", memory["class"].clone())  # the balancing class (-1: a multi-label task)

    def _generator(self, salt: int) -> torch.Generator:
        # depends on (seed, task, step) only: a resumed run draws what the uninterrupted one drew
        seed = self.learner[0].context.seed
        return torch.Generator().manual_seed(seed * 1_000_003 + self.task.index * 10_007 + self.global_step * 31 + salt)

    @torch.no_grad()
    def remember(self, index: torch.Tensor, labels: torch.Tensor) -> None:
        """GDumb's greedy class-balanced sampler, one example at a time (the paper's Algorithm 1)."""
        classes = [-1] * int(index.numel()) if self.task.multi_label else labels.view(-1).tolist()
        generator, task = self._generator(1), self.task.index
        slots, kinds = self.memory_task.tolist(), self.memory_class.tolist()
        counts: dict[tuple[int, int], int] = {}
        for t, c in zip(slots, kinds, strict=True):
            if t >= 0:
                counts[(t, c)] = counts.get((t, c), 0) + 1
        for i, label in zip(index.tolist(), classes, strict=True):
            if -1 in slots:
                slot = slots.index(-1)
            else:
                largest = max(counts.values())
                if counts.get((task, label), 0) >= largest:
                    continue  # its class is already among the largest: the example is not kept
                victims = [s for s, key in enumerate(zip(slots, kinds, strict=True)) if counts[key] == largest]  # a largest class's
                slot = victims[int(torch.randint(len(victims), (1,), generator=generator))]
                counts[(slots[slot], kinds[slot])] -= 1
            slots[slot], kinds[slot] = task, label
            counts[(task, label)] = counts.get((task, label), 0) + 1
            self.memory_index[slot] = i
        self.memory_task.copy_(torch.tensor(slots))
        self.memory_class.copy_(torch.tensor(kinds))

    def _head(self, j: int) -> nn.Module:
        return self.head if j == self.task.index else self.old_heads[str(j)]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        self.remember(index, y)  # the stream is only sampled; training reads the memory
        learner, generator = self.learner[0], self._generator(2)
        filled = torch.nonzero(self.memory_task.cpu() >= 0).view(-1)
        picks = filled[torch.randint(int(filled.numel()), (learner.config.batch_size or int(x.shape[0]),), generator=generator)]
        tasks = self.memory_task.cpu()[picks]
        groups, images, targets = [], [], []
        for j in sorted(set(tasks.tolist())):
            chosen = self.memory_index.cpu()[picks[tasks == j]]
            image, label = learner.context.data.train_examples(j, chosen, augment=True, generator=generator,
                                                               device=self.device)
            groups.append((j, int(chosen.numel())))
            images.append(image)
            targets.append(label)
        features = self.backbone(torch.cat(images).to(x.dtype))  # one forward for the whole memory batch
        loss, start, total = features.new_zeros(()), 0, sum(n for _, n in groups)
        for (j, n), label in zip(groups, targets, strict=True):
            logits = self._head(j)(features[start:start + n])
            start += n
            part = F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype)) if learner.multi_label[j] \
                else F.cross_entropy(logits, label, label_smoothing=self.label_smoothing)
            loss = loss + part * (n / total)
        self.log("train/loss", loss, prog_bar=True)
        return loss


class GDumbLearner(Learner):
    Config = GDumbConfig
    config: GDumbConfig
    supports_ddp = False  # each process would fill a memory of its own slice of the batches

    def __init__(self, config: GDumbConfig, context: Any) -> None:
        super().__init__(config, context)
        size = config.memory_size
        self.memory = {"task": torch.full((size,), -1, dtype=torch.int64),
                       "index": torch.zeros(size, dtype=torch.int64), "class": torch.full((size,), -1, dtype=torch.int64)}
        self.heads: dict[int, dict[str, torch.Tensor]] = {}  # task index -> its head's weights (reset=false)
        self.classes: dict[int, int] = {}  # task index -> its number of classes
        self.multi_label: dict[int, bool] = {}
        self.start: dict[str, torch.Tensor] = {}  # the backbone's weights when the stream began (reset=true)

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        if self.context.data is None:
            raise RuntimeError("learner 'gdumb' needs the harness's data access (context.data); run it through nevisbench")
        if self.config.reset:
            if not self.start:
                self.start = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
            backbone.load_state_dict(self.start)
        self.classes[task.index], self.multi_label[task.index] = task.num_classes, task.multi_label
        old: dict[int, nn.Module] = {}
        for j in sorted(self.classes):
            if j != task.index:
                old[j] = nn.Linear(self.feature_dim, self.classes[j])
                if not self.config.reset:
                    old[j].load_state_dict(self.heads[j])
        return GDumbModule(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train,
                           learner=self, old_heads=old)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        self.memory = {"task": module.memory_task.detach().cpu().clone(), "index": module.memory_index.detach().cpu().clone(),
                       "class": module.memory_class.detach().cpu().clone()}
        self.heads[task.index] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        for j, head in module.old_heads.items():
            self.heads[int(j)] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}

    def revisit_module(self, task: TaskInfo, module: Any, head: nn.Module | None) -> nn.Module:
        return nn.Sequential(module.backbone, module._head(task.index))

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """How the memory is shared after `task`: examples kept per task, and the smallest and largest class."""
        counts: dict[tuple[int, int], int] = {}
        for t, c in zip(self.memory["task"].tolist(), self.memory["class"].tolist(), strict=True):
            if t >= 0:
                counts[(t, c)] = counts.get((t, c), 0) + 1
        per_task = {str(t): sum(n for (u, _), n in counts.items() if u == t) for t in sorted({t for t, _ in counts})}
        return {"memory_per_task": per_task, "smallest_class": min(counts.values(), default=0),
                "largest_class": max(counts.values(), default=0)}

    def state_dict(self) -> dict[str, Any]:
        return {"memory": dict(self.memory), "heads": {str(j): dict(h) for j, h in self.heads.items()},
                "classes": {str(j): n for j, n in self.classes.items()},
                "multi_label": {str(j): v for j, v in self.multi_label.items()}, "start": dict(self.start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = dict(state["memory"])
        self.heads = {int(j): dict(h) for j, h in state["heads"].items()}
        self.classes = {int(j): int(n) for j, n in state["classes"].items()}
        self.multi_label = {int(j): bool(v) for j, v in state["multi_label"].items()}
        self.start = dict(state["start"])
