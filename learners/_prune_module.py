"""learned_prune's task module: gates trained by the Lagrangian with their own optimizer, then
compaction and finetuning; or, for a transferred or random mask, finetuning only. Auxiliary
batches of task t-1's training set for single | multi | delta. See docs/learned-prune.md."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nevisbench.api.learner import clone_module
from nevisbench.api.module import TaskModule
from nevisbench.api.schedule import planned_steps
from nevisbench.learners._gates import GateSet, deterministic
from nevisbench.learners._lagrangian import calibrate, penalty, ramp, structure_optimizer
from nevisbench.learners._structure import BlockUnits, FlopModel, Gates, binary, compact, features, merge_into, overlap, unit_mask

__all__ = ["Auxiliary", "LearnedPruneModule"]


@dataclass
class Auxiliary:
    """Task t-1 as the auxiliary task (single | multi | delta): its training set through the
    harness's data API, its head (trained too), its own gates (multi | delta) and the loss weights."""

    data: Any  # has train_batch(task_index, batch_size, *, generator) -> (images, labels)
    task_index: int
    head: nn.Module
    multi_label: bool
    weights: tuple[float, float]  # (task t, task t-1)
    gates: GateSet | None = None  # multi | delta: task t-1's gates; single: the shared ones
    loss: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.loss = nn.BCEWithLogitsLoss() if self.multi_label else nn.CrossEntropyLoss()


class LearnedPruneModule(TaskModule):
    """TaskModule with gates, the Lagrangian, in-training compaction, the auxiliary task and
    optional distillation. `fixed` (a 0/1 mask) skips the prune phase: the task only finetunes."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task, train, cfg, units: list[BlockUnits],
                 flops: FlopModel, gates: GateSet, seed: int, aux: Auxiliary | None = None,
                 teacher: nn.Module | None = None, fixed: tuple[Gates, str] | None = None) -> None:
        super().__init__(backbone, head, task=task, train=train, frozen=[teacher] if teacher is not None else None)
        self.cfg, self.units, self.flops, self.gates, self.teacher = cfg, units, flops, gates, teacher
        self.aux = aux
        self.aux_head = aux.head if aux is not None else None  # registered: trained and checkpointed
        self.prev_gates = aux.gates if aux is not None and aux.gates is not gates else None
        sets = 1 if self.prev_gates is None else 2
        self.lambda1, self.lambda2 = nn.Parameter(torch.zeros(sets)), nn.Parameter(torch.zeros(sets))  # per gate set
        self.phase, self.boundary = "prune", None
        self.start: list[float] | None = None  # initial expected sparsities
        self.z: Gates | None = None  # the deterministic gates, once compacted
        self.record: dict[str, Any] = {}
        self._noise = torch.Generator().manual_seed(seed)  # gate noise and auxiliary batches: checkpointed
        self._snapshot: list[nn.Module] = []  # the dense backbone at compaction (hidden from nn.Module)
        self._eval_gates: tuple[int, Gates] | None = None
        self.structure = structure_optimizer(self._gate_parameters(), self.lambda1, self.lambda2, cfg.gate_lr, cfg.lagrange_lr)
        if fixed is not None:
            z, origin = fixed
            self._snapshot = [clone_module(self.backbone).cpu()]
            self._restructure(z)
            self.boundary = 0
            self.record = {"structure": origin, **self._structure_record(z, None, 0.0, None)}

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phase == "finetune":
            return self.head(self.backbone(x))
        step = self.trainer.global_step if self._trainer is not None else -1
        if self._eval_gates is None or self._eval_gates[0] != step:  # deterministic gates (CoFi's evaluation)
            self._eval_gates = (step, {n: deterministic(a) for n, a in self.gates.log_alpha.items()})
        return self.head(features(self.backbone, self.units, x, self._eval_gates[1])[0])

    def _gate_sets(self) -> list[GateSet]:
        return [self.gates] + ([self.prev_gates] if self.prev_gates is not None else [])

    def _targets(self) -> list[float]:
        """Per gate set: the target sparsity now, ramped from the set's initial expected sparsity."""
        step = self.trainer.global_step if self._trainer is not None else 0
        length = 0.0 if self.boundary is None else self.cfg.warmup_fraction * self.boundary
        if self.start is None:
            raise RuntimeError("_targets before _lagrangian set the initial sparsities")
        return [ramp(step, s, self.cfg.sparsity, length) if self.boundary is not None else s for s in self.start]

    def _lagrangian(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sets = self._gate_sets()
        if self.start is None:
            with torch.no_grad():
                self.start = [float(1.0 - self.flops.ratio(s.probs())) for s in sets]
        terms = [penalty(self.flops, s.probs(), self.lambda1[i], self.lambda2[i], t)
                 for i, (s, t) in enumerate(zip(sets, self._targets(), strict=False))]
        return sum(p for p, _ in terms), [e for _, e in terms]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        pruning = self.phase == "prune"
        feats, stages = features(self.backbone, self.units, x, self.gates.sample(self._noise) if pruning else None)
        logits = self.head(feats)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self.log("train/loss", loss, prog_bar=True)
        if self.aux is not None:
            loss = self.aux.weights[0] * loss + self.aux.weights[1] * self._aux_loss(x.shape[0], x)
        if pruning:
            term, expected = self._lagrangian()
            loss = loss + term
            self.log_dict({"prune/expected_sparsity": expected[0].detach(), "prune/target": self._targets()[0],
                           "prune/lambda1": self.lambda1[0].detach(), "prune/lambda2": self.lambda2[0].detach()})
        else:
            self.log("prune/achieved_sparsity", self.record["achieved_sparsity"])
        if self.teacher is not None:
            with torch.no_grad():
                _, targets = features(self.teacher, self.units, x)
            loss = loss + self.cfg.distill_weight * sum(F.mse_loss(s, t) for s, t in zip(stages, targets, strict=False)) / len(stages)
        return loss

    def _aux_loss(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        """One batch of task t-1's training set through its head (and its gates while pruning);
        it runs inside the training step, so the meter charges it like any training compute."""
        if self.aux is None or self.aux_head is None:
            raise RuntimeError("_aux_loss without an auxiliary task")
        images, labels = self.aux.data.train_batch(self.aux.task_index, batch_size, generator=self._noise)
        images, labels = images.to(like.device, like.dtype), labels.to(like.device)
        if self.phase == "prune":
            gates = self.prev_gates if self.prev_gates is not None else self.gates
            feats = features(self.backbone, self.units, images, gates.sample(self._noise))[0]
        else:  # the compacted network (task t's structure)
            feats = self.backbone(images)
        logits = self.aux_head(feats)
        return self.aux.loss(logits, labels.to(logits.dtype) if self.aux.multi_label else labels)

    # -- optimisation --------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        special = {id(p) for p in self._gate_parameters()} | {id(self.lambda1), id(self.lambda2)}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in special]

    def _gate_parameters(self) -> list[nn.Parameter]:
        return [p for s in self._gate_sets() for p in s.parameters()]

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainable_parameters())

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.phase != "prune":
            return
        # right after the model's step, so a checkpoint written at this step's end already holds these
        self.structure.step()
        self.structure.zero_grad(set_to_none=True)
        for s in self._gate_sets():
            s.clamp_()
        if self.cfg.transfer == "delta" and self.prev_gates is not None:
            self._shrink_offsets()
        if self.boundary is None:  # the plan is known once step 0 ran (a FLOP budget decides it there)
            total = planned_steps(self.trainer) or self.trainer.max_steps
            self.boundary = 1 if total <= 1 else min(total - 1, max(1, round(self.cfg.prune_fraction * total)))

    def on_train_start(self) -> None:
        # resumed from a checkpoint written at the boundary step, before the compaction ran
        if self.phase == "prune" and self.boundary is not None and self.trainer.global_step >= self.boundary:
            self._compact_now()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # after the checkpoint callback: a checkpoint of the boundary step holds the pre-compaction
        # state, and on_train_start compacts when resuming from it
        if self.phase == "prune" and self.boundary is not None and self.trainer.global_step >= self.boundary:
            self._compact_now()

    def on_train_end(self) -> None:
        if self.phase == "prune":  # stopped before the boundary: evaluate the compacted network anyway
            self._compact_now(rebuild_optimizer=False)

    @torch.no_grad()
    def _shrink_offsets(self) -> None:
        """transfer=delta: per-task gates = base + offset, base the mean of the task gates (the
        minimiser of the penalty over the base); the proximal step of `delta_penalty` * |offset|^2
        at the gates' learning rate. Penalty 0 is exactly `multi`; a large one ties the sets."""
        shrink = 1.0 / (1.0 + 2.0 * self.cfg.gate_lr * self.cfg.delta_penalty)
        if self.prev_gates is None:
            raise RuntimeError("transfer=delta without task t-1's gates")
        for a, b in zip(self.gates.log_alpha.values(), self.prev_gates.log_alpha.values(), strict=False):
            base = (a + b) / 2
            a.copy_(base + (a - base) * shrink)
            b.copy_(base + (b - base) * shrink)

    # -- compaction ----------------------------------------------------------------------------------
    def calibrated_alphas(self) -> dict[str, torch.Tensor]:
        """The log-alphas with the calibration shift applied to the fine groups (what transfers)."""
        shift = self.record.get("calibration_shift") or 0.0
        fine = {n for b in self.units for n in (*b.channel, *b.kernel) if n is not None}
        return {n: a + shift if n in fine else a for n, a in self.gates.values().items()}

    def _structure_record(self, z: Gates, expected: float | None, shift: float, warning: str | None) -> dict[str, Any]:
        kept = {b.path: [int((z[name] != 0).sum()) for name in b.channel] for b in self.units}
        removed = [b.path for b in self.units if b.block is not None and float(z[b.block].sum()) == 0]
        record = {"target_sparsity": self.cfg.sparsity, "expected_sparsity": expected,
                  "achieved_sparsity": 1.0 - float(self.flops.ratio(binary(z))), "calibration_shift": shift,
                  "calibration_warning": warning,
                  "compaction_step": self._trainer.global_step if self._trainer is not None else 0,
                  "kept_channels": {p: k for p, k in kept.items() if p not in removed}, "removed_blocks": removed,
                  "joint_overlap": None}
        if self.cfg.granularity == "kernel":
            masks = [(n, m.weight_mask) for n, m in self.backbone.named_modules() if hasattr(m, "weight_mask")]
            record["kernel_density"] = {n: float(m.mean()) for n, m in masks}
        return record

    def _compact_now(self, *, rebuild_optimizer: bool = True) -> None:
        alphas = {n: a.detach() for n, a in self.gates.log_alpha.items()}
        cal = calibrate(alphas, self.units, self.flops, self.cfg.sparsity)
        if cal.warning:
            warnings.warn(f"learned_prune, task {self.task.key}: {cal.warning}", stacklevel=1)
        expected = float(1.0 - self.flops.ratio(self.gates.probs()).detach())
        self._snapshot = [clone_module(self.backbone).cpu()]
        self._restructure(cal.z)
        self.record = {"structure": "learned", **self._structure_record(cal.z, expected, cal.shift, cal.warning)}
        if self.prev_gates is not None:  # multi / delta: the auxiliary task's gates, compacted alike
            prev = {n: a.detach() for n, a in self.prev_gates.log_alpha.items()}
            joint = calibrate(prev, self.units, self.flops, self.cfg.sparsity).z
            self.record["joint_overlap"] = overlap(unit_mask(self.units, cal.z), unit_mask(self.units, joint))
        if rebuild_optimizer:
            self._rebuild_optimizer()

    def _restructure(self, z: Gates) -> None:
        compact(self.backbone, self.units, z)
        self.z, self.phase, self._eval_gates = z, "finetune", None
        for p in [*self._gate_parameters(), self.lambda1, self.lambda2]:
            p.requires_grad_(False)

    def _rebuild_optimizer(self) -> None:
        """A new optimizer for the compacted parameters (fresh state); the LR schedule continues."""
        trainer = self.trainer
        step = trainer.global_step
        trainer.strategy.setup_optimizers(trainer)
        for config in trainer.lr_scheduler_configs:
            scheduler = cast(torch.optim.lr_scheduler.LambdaLR, config.scheduler)  # TaskModule's schedule
            scheduler.last_epoch = step
            rates = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=False)]
            for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=False):
                group["lr"] = rate
            scheduler._last_lr = rates

    def unit_mask(self) -> torch.Tensor:
        return unit_mask(self.units, self.z)

    def decompact(self) -> nn.Module:
        """The dense-shaped backbone with the finetuned weights at the kept units (the others as at
        compaction); it replaces `self.backbone` so the continual scenario carries a dense network."""
        dense = self._snapshot[0]
        merge_into(dense, self.backbone, self.units, self.z)
        self.backbone = dense
        return dense

    # -- resume --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["learned_prune"] = {
            "phase": self.phase, "boundary": self.boundary, "start": self.start, "noise": self._noise.get_state(),
            "record": self.record, "structure": self.structure.state_dict(),
            "z": None if self.z is None else {n: v.cpu() for n, v in self.z.items()},
            "snapshot": self._snapshot[0].state_dict() if self._snapshot else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["learned_prune"]
        self.boundary, self.start, self.record = state["boundary"], state["start"], state["record"]
        self._noise.set_state(state["noise"])
        self.structure.load_state_dict(state["structure"])
        if state["phase"] == "finetune" and self.phase == "prune":  # rebuild the compacted structure; Lightning loads its weights next
            snapshot = clone_module(self.backbone).cpu()
            snapshot.load_state_dict(state["snapshot"])
            self._snapshot = [snapshot]
            self._restructure({n: v.to(self.lambda1.device) for n, v in state["z"].items()})
