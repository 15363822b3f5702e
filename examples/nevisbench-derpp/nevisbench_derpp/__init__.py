"""`derpp`: DER++, dark experience replay (Buzzega et al., NeurIPS 2020, "Dark Experience for
General Continual Learning: a Strong, Simple Baseline"). While a task trains, a reservoir sample of
its examples is kept together with the logits the model gave them *when they were seen*; every
later step replays two batches from the memory: one matched to the stored logits (mean squared
error, weight `alpha`), one to the stored labels (cross-entropy, weight `beta`).

Written against nevisbench's public API only:
- the module opts in to `batch_indices`: each training batch is `(x, y, indices)`, the examples'
  positions in the task's training split, so the reservoir records (index, logits) from the forward
  the step computes anyway, with no extra pass over the task;
- the current task's reservoir lives in module *buffers* (`seen`, `kept_index`, `kept_logits`): a
  mid-task checkpoint saves and restores them with the weights; finished tasks' memories are the
  learner's `state_dict` (indices and logits: small tensors);
- replayed images come from the harness (`self.context.data.train_examples`), and each earlier task
  keeps its own head, trained further by replay, so `revisit_module` predicts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["DERppConfig", "DERppLearner"]


@dataclass
class DERppConfig(LearnerConfig):
    name: str = "derpp"
    memory_per_task: int = 50  # examples of each task kept (reservoir over the examples it trained on)
    replay_batch_size: int = 0  # examples in each of the two replay batches; 0: data.batch_size
    alpha: float = 0.5  # weight of the logit-matching (dark knowledge) loss
    beta: float = 0.5  # weight of the replayed labels' cross-entropy (the "++")

    def validate(self) -> None:
        for key in ("memory_per_task", "replay_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected an integer >= 0")
        for key in ("alpha", "beta"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected a number >= 0")


class DERModule(TaskModule):
    """The current task's module: earlier tasks' heads, the reservoir (buffers) and the replay step."""

    batch_indices = True  # training batches are (x, y, indices)

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, learner: DERppLearner,
                 old_heads: dict[int, nn.Module]) -> None:
        super().__init__(backbone, head, task=task, train=train)
        self.old_heads = nn.ModuleDict({str(j): h for j, h in old_heads.items()})
        self.learner = [learner]  # a list: not a submodule, not in the checkpoint
        size = learner.config.memory_per_task
        # per-step state in buffers, so a run resumed mid-task finds the reservoir as it was
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("kept_index", torch.full((size,), -1, dtype=torch.int64))
        self.register_buffer("kept_logits", torch.zeros(size, task.num_classes))

    def _generator(self, salt: int) -> torch.Generator:
        # depends on (seed, task, step) only: a resumed run draws what the uninterrupted one drew
        seed = self.learner[0].context.seed
        return torch.Generator().manual_seed(seed * 1_000_003 + self.task.index * 10_007 + self.global_step * 31 + salt)

    @torch.no_grad()
    def _remember(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        """Reservoir sampling (Vitter's algorithm R) of this batch's (index, logits) into the buffers."""
        size = int(self.kept_index.numel())
        if size == 0:
            return
        generator, seen, slots = self._generator(1), int(self.seen), {}
        for i in range(int(index.numel())):
            seen += 1
            slot = seen - 1 if seen <= size else int(torch.randint(seen, (1,), generator=generator))
            if slot < size:
                slots[slot] = i  # a later example of the batch drawn to the same slot replaces an earlier one
        if slots:
            where = torch.tensor(list(slots), device=self.kept_index.device)
            rows = torch.tensor(list(slots.values()), device=index.device)
            self.kept_index[where] = index[rows].to(self.kept_index.device)
            self.kept_logits[where] = logits[rows].to(self.kept_logits.dtype)
        self.seen.fill_(seen)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        logits = self(x)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self._remember(index, logits.detach())  # the logits this step computed anyway
        self.log("train/loss", loss, prog_bar=True)
        learner = self.learner[0]
        if not learner.memory:
            return loss
        generator = self._generator(2)
        size = learner.config.replay_batch_size or int(x.shape[0])
        if learner.config.alpha > 0:
            j, picks = learner.draw(size, generator)
            images, _ = learner.context.data.train_examples(j, learner.memory[j]["index"][picks], augment=True,
                                                            generator=generator, device=self.device)
            replayed = self.old_heads[str(j)](self.backbone(images.to(x.dtype)))
            dark = F.mse_loss(replayed, learner.memory[j]["logits"][picks].to(replayed))
            self.log("train/logit_loss", dark)
            loss = loss + learner.config.alpha * dark
        if learner.config.beta > 0:
            j, picks = learner.draw(size, generator)
            images, labels = learner.context.data.train_examples(j, learner.memory[j]["index"][picks], augment=True,
                                                                 generator=generator, device=self.device)
            replayed = self.old_heads[str(j)](self.backbone(images.to(x.dtype)))
            label_loss = F.binary_cross_entropy_with_logits(replayed, labels.to(replayed.dtype)) \
                if learner.multi_label.get(j, False) else F.cross_entropy(replayed, labels)
            self.log("train/replay_loss", label_loss)
            loss = loss + learner.config.beta * label_loss
        return loss


class DERppLearner(Learner):
    Config = DERppConfig
    config: DERppConfig
    helpers = ("draw",)
    supports_ddp = False  # each process would keep a reservoir of its own slice of the batches

    def __init__(self, config: DERppConfig, context: Any) -> None:
        super().__init__(config, context)
        self.memory: dict[int, dict[str, torch.Tensor]] = {}  # task index -> {"index": (k,), "logits": (k, classes)}
        self.heads: dict[int, dict[str, torch.Tensor]] = {}  # task index -> its head's weights
        self.multi_label: dict[int, bool] = {}
        self.head_drift = 0.0  # set by end_task, read by task_report

    def draw(self, size: int, generator: torch.Generator) -> tuple[int, torch.Tensor]:
        """An earlier task (uniformly) and `size` positions in its memory (with replacement)."""
        tasks = sorted(self.memory)
        j = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
        return j, torch.randint(int(self.memory[j]["index"].numel()), (size,), generator=generator)

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        if self.context.data is None:
            raise RuntimeError("learner 'derpp' needs the harness's data access (context.data); run it through nevisbench")
        self.multi_label[task.index] = task.multi_label
        old: dict[int, nn.Module] = {}
        for j, weights in self.heads.items():
            old[j] = nn.Linear(int(weights["weight"].shape[1]), int(weights["weight"].shape[0]))
            old[j].load_state_dict(weights)
        head = nn.Linear(self.feature_dim, task.num_classes)
        return DERModule(backbone, head, task=task, train=self.context.train, learner=self, old_heads=old)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        self.heads[task.index] = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        self.head_drift = 0.0  # how far replay moved the earlier tasks' heads during this task (L2)
        for j, head in module.old_heads.items():  # replay trained the earlier heads further
            now = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
            self.head_drift += sum(float((now[k] - v).double().pow(2).sum()) for k, v in self.heads[int(j)].items()) ** 0.5
            self.heads[int(j)] = now
        kept = min(int(module.seen), int(module.kept_index.numel()))
        if kept:
            self.memory[task.index] = {"index": module.kept_index[:kept].detach().cpu().clone(),
                                       "logits": module.kept_logits[:kept].detach().cpu().clone()}

    def revisit_module(self, task: TaskInfo, module: Any, head: nn.Module | None) -> nn.Module:
        return nn.Sequential(module.backbone, module.old_heads[str(task.index)])

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """The memory after `task` and how far replay moved the earlier heads (on the results line)."""
        return {"memory": {str(j): int(m["index"].numel()) for j, m in self.memory.items()},
                "earlier_heads_drift": self.head_drift}

    def state_dict(self) -> dict[str, Any]:
        return {"memory": {str(j): dict(m) for j, m in self.memory.items()},
                "heads": {str(j): dict(h) for j, h in self.heads.items()},
                "multi_label": {str(j): v for j, v in self.multi_label.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = {int(j): dict(m) for j, m in state["memory"].items()}
        self.heads = {int(j): dict(h) for j, h in state["heads"].items()}
        self.multi_label = {int(j): bool(v) for j, v in state["multi_label"].items()}
