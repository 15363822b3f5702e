"""`TaskModule`: the LightningModule a learner returns for a task (backbone + linear head)."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from nevisbench.api.schedule import lr_factor, planned_steps, warmup_steps
from nevisbench.api.types import TaskInfo

__all__ = ["TaskModule", "NORM_LAYERS"]

# Normalisation layers: their affine parameters get no weight decay under `train.decay_norm_and_bias=false`
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                            *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


class TaskModule(L.LightningModule):
    """Backbone + linear head, trained with cross-entropy (binary cross-entropy per class on
    multi-label tasks).

    Learners return this (or a subclass) from `begin_task`; `frozen` submodules get no gradients
    and stay in eval mode. `forward(x)` must return class logits:
    the harness evaluates dev and test itself through it. `self.backbone(x)` returns pooled
    features of shape (batch, feature_dim). The LR schedule (linear warmup, then cosine) spans the
    task plan's steps (`nevisbench.api.schedule.planned_steps`), which a FLOP budget decides during
    step 0, before the scheduler first steps.

    `batch_indices = True` on a subclass (or any LightningModule a learner returns) makes each
    training batch `(x, y, indices)`: `indices` (int64, on the batch's device) are the examples'
    positions in the task's training split, the indices `context.data.train_examples(task, ...)`
    takes, so a memory keyed by example (DER++'s logits, iCaRL, GDumb) needs no extra pass. Off by
    default: a module that unpacks `x, y = batch` is unchanged. `training_step` here takes both.
    """

    # opt in: training batches carry their examples' indices in the task's training split
    batch_indices: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any,
                 frozen: list[nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        # frozen parts: no gradients, and kept in eval mode so BatchNorm statistics do not move
        self._frozen = list(frozen or [])
        for part in self._frozen:
            part.requires_grad_(False)
            part.eval()
        self.task = task
        self.train_cfg = train
        # multi-label tasks (Pascal VOC 2007/2012): one sigmoid per class, binary cross-entropy
        self.loss_fn = nn.BCEWithLogitsLoss() if task.multi_label else nn.CrossEntropyLoss(label_smoothing=float(train.label_smoothing))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's captured mode; re-assert that frozen parts stay in eval
        for part in self._frozen:
            part.eval()

    def train(self, mode: bool = True) -> TaskModule:
        super().train(mode)
        for part in self._frozen:
            part.eval()
        return self

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]  # (x, y) or, with batch_indices, (x, y, indices)
        logits = self(x)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainable_parameters())

    def optimization(self, params: Any) -> dict[str, Any]:
        """The configured optimizer (`train.optimizer`, lr, momentum and `nesterov`, weight decay) over
        `params` (parameters or param groups), with the harness's warmup + cosine/constant LR schedule.

        With `train.decay_norm_and_bias=false` each group is split in two: the weights of conv and
        linear layers (every parameter named `weight` outside a normalisation layer) keep the decay,
        biases, norm layers' parameters and any other parameter get none (dm_nevis's mask, which
        decays Haiku's `w` parameters only). The decay is coupled (added to the gradient before
        momentum and the rate), as dm_nevis's `sgdw` applies it. The cosine ends at the absolute
        rate `train.final_lr` in every group; a warmup of `train.warmup_epochs` starts from rate 0."""
        cfg = self.train_cfg
        fused = cfg.get("fused") if cfg.get("fused") is not None else self.device.type == "cuda"
        # fused on CUDA; elsewhere foreach: one op for all parameters instead of a few per parameter (the
        # same arithmetic, and a third fewer ops per ResNet-18 step for a counting meter to see)
        extra: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
        groups = self._decay_groups(params) if not cfg.get("decay_norm_and_bias", True) else params
        if cfg.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                nesterov=bool(cfg.get("nesterov", False)) and cfg.momentum > 0, **extra)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
        final = float(cfg.get("final_lr") or 0.0)

        def factor_of(base: float) -> Any:
            floor = min(1.0, final / base) if base > 0 else 0.0

            def factor(step: int) -> float:
                # the task plan's step count (a FLOP budget decides it during step 0, before this is
                # first needed for a step other than 0; step 0's rate is recomputed then)
                return lr_factor(step, total=planned_steps(self._trainer), warmup=warmup_steps(cfg, self._trainer),
                                 schedule=cfg.schedule, floor=floor, from_zero=float(cfg.get("warmup_epochs") or 0) > 0)
            return factor

        factors = [factor_of(float(group["lr"])) for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _decay_groups(self, params: Any) -> list[dict[str, Any]]:
        """`params` as param groups, each split into its decayed weights and the rest (weight decay 0).
        Group i of `params` stays group i (its weights, or all of it when it has none), so a learner
        that reads its groups by index finds them; the rest of each split group is appended."""
        decayed = {id(p) for module in self.modules() if not isinstance(module, NORM_LAYERS)
                   for name, p in module.named_parameters(recurse=False) if name == "weight"}
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        out, tail = [], []
        for group in groups:
            members = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
            weights = [p for p in members if id(p) in decayed]
            rest = {**group, "params": [p for p in members if id(p) not in decayed], "weight_decay": 0.0}
            out.append({**group, "params": weights} if weights else rest)
            tail += [rest] if weights and rest["params"] else []
        return out + tail
