"""`TaskModule`: the LightningModule a learner returns for a task (backbone + linear head)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from nevisbench.api.schedule import lr_factor, planned_steps
from nevisbench.api.types import TaskInfo

__all__ = ["TaskModule"]


class TaskModule(L.LightningModule):
    """Backbone + linear head, trained with cross-entropy (binary cross-entropy per class on
    multi-label tasks).

    Learners return this (or a subclass) from `begin_task`; `frozen` submodules get no gradients
    and stay in eval mode. `forward(x)` must return class logits:
    the harness evaluates dev and test itself through it. `self.backbone(x)` returns pooled
    features of shape (batch, feature_dim). The LR schedule (linear warmup, then cosine) spans the
    task plan's steps (`nevisbench.api.schedule.planned_steps`), which a FLOP budget decides during
    step 0, before the scheduler first steps.
    """

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

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y.to(logits.dtype) if self.task.multi_label else y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainable_parameters())

    def optimization(self, params: Any) -> dict[str, Any]:
        """The configured optimizer (`train.optimizer`, lr, momentum, weight decay) over `params`
        (parameters or param groups), with the harness's warmup + cosine/constant LR schedule."""
        cfg = self.train_cfg
        fused = cfg.get("fused") if cfg.get("fused") is not None else self.device.type == "cuda"
        extra: dict[str, Any] = {"fused": True} if fused else {}
        if cfg.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
        def factor(step: int) -> float:
            # the task plan's step count (a FLOP budget decides it during step 0, before this is
            # first needed for a step other than 0; step 0's rate is recomputed then)
            return lr_factor(step, total=planned_steps(self._trainer), warmup=int(cfg.warmup_steps), schedule=cfg.schedule)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
