"""`TaskModule`: the LightningModule a learner returns for a task (backbone + linear head)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from nevisbench.learner import TaskInfo

__all__ = ["TaskModule"]


class TaskModule(L.LightningModule):
    """Backbone + linear head, trained with cross-entropy; reports accuracy on dev and test.

    Learners return this (or a subclass) from `begin_task`. `self.backbone(x)` must return pooled
    features of shape (batch, feature_dim).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.task = task
        self.train_cfg = train
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=float(train.label_smoothing))
        self.dev_accuracy = MulticlassAccuracy(num_classes=task.num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=task.num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.dev_accuracy.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        self.log("dev/error", 1.0 - self.dev_accuracy.compute())
        self.dev_accuracy.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_accuracy.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        self.log("test/error", 1.0 - self.test_accuracy.compute())
        self.test_accuracy.reset()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        params = self.trainable_parameters()
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = max(1, int(self.trainer.max_steps))
        warmup = min(int(cfg.warmup_steps), total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if cfg.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
