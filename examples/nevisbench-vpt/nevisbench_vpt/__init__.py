"""`vpt`: visual prompt tuning, shallow (Jia et al., ECCV 2022, "Visual Prompt Tuning"). The ViT
stays frozen; each task learns `num_prompts` prompt tokens, inserted after the class token behind
the position embeddings, and a linear head on the class token's output.

Written against nevisbench's public API only:
- `backbone_families = ("vit",)`: it reads torchvision's `VisionTransformer` parts (`_process_input`,
  `class_token`, `encoder`), so a run on another family is refused in one line before anything runs;
- the backbone is frozen (`frozen=[backbone]`): it gets no gradients and stays in eval mode, and in
  `continual` the carried backbone is the one the stream started from;
- each task's prompts and head are learner state (`state_dict`), and `revisit_module` predicts an
  earlier task with its own prompts and head: nothing it learned is overwritten;
- the prompts train with their own optimizer settings (`learner.optimizer`, `learner.lr`: AdamW at
  1e-3 by default), as prompts and a head on a frozen ViT need, not the run's SGD at 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["VPTConfig", "VPTLearner", "PromptedViT"]

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class VPTConfig(LearnerConfig):
    name: str = "vpt"
    num_prompts: int = 8  # prompt tokens per task
    optimizer: str = "adamw"  # the prompts' and head's optimizer (replaces train.optimizer)
    lr: float = 1e-3  # their learning rate (replaces train.lr)
    weight_decay: float = 0.0  # (replaces train.weight_decay)

    def validate(self) -> None:
        if isinstance(self.num_prompts, bool) or not isinstance(self.num_prompts, int) or self.num_prompts < 1:
            raise ConfigError(f"Invalid value for 'learner.num_prompts': {self.num_prompts!r}; expected an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Invalid value for 'learner.optimizer': {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        for key in ("lr", "weight_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"Invalid value for 'learner.{key}': {value!r}; expected a number >= 0")


class PromptedViT(nn.Module):
    """A torchvision `VisionTransformer` (its classifier stripped) with prompt tokens inserted after
    the class token, behind the position embeddings; returns the class token's output."""

    vit: VisionTransformer

    def __init__(self, vit: nn.Module, prompts: torch.Tensor) -> None:
        super().__init__()
        self.vit = cast(VisionTransformer, vit)
        self.prompts = nn.Parameter(prompts)  # (1, num_prompts, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit, encoder = self.vit, self.vit.encoder
        tokens = vit._process_input(x)
        tokens = torch.cat([vit.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + encoder.pos_embedding
        prompts = self.prompts.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1)
        return encoder.ln(encoder.layers(encoder.dropout(tokens)))[:, 0]


class VPTModule(TaskModule):
    def __init__(self, backbone: nn.Module, head: nn.Module, *, task: TaskInfo, train: Any, prompts: torch.Tensor) -> None:
        super().__init__(backbone, head, task=task, train=train, frozen=[backbone])
        self.prompted = PromptedViT(backbone, prompts)  # shares the frozen backbone; adds the prompts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.prompted(x))


class VPTLearner(Learner):
    Config = VPTConfig
    config: VPTConfig
    backbone_families = ("vit",)

    def __init__(self, config: VPTConfig, context: Any) -> None:
        super().__init__(config, context)
        self.tasks: dict[int, dict[str, torch.Tensor]] = {}  # task index -> its prompts and head weights

    def _train(self) -> Any:
        cfg = self.config
        settings = {"optimizer": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        train = self.context.train
        return OmegaConf.merge(train, settings) if OmegaConf.is_config(train) else {**dict(train), **settings}

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        vit = cast(VisionTransformer, backbone)
        hidden = int(vit.hidden_dim)
        # uniform in +-sqrt(6 / (hidden + patch area * 3)), as the paper initialises shallow prompts
        bound = math.sqrt(6.0 / (hidden + 3 * int(vit.patch_size) ** 2))
        generator = torch.Generator().manual_seed(self.context.learner_seed(task.index))
        prompts = (torch.rand(1, self.config.num_prompts, hidden, generator=generator) * 2 - 1) * bound
        head = nn.Linear(self.feature_dim, task.num_classes)
        return VPTModule(backbone, head, task=task, train=self._train(), prompts=prompts)

    def end_task(self, task: TaskInfo, module: Any) -> None:
        self.tasks[task.index] = {"prompts": module.prompted.prompts.detach().cpu().clone(),
                                  **{f"head.{k}": v.detach().cpu().clone() for k, v in module.head.state_dict().items()}}

    def revisit_module(self, task: TaskInfo, module: Any, head: nn.Module | None) -> nn.Module:
        kept = self.tasks[task.index]
        earlier = nn.Linear(int(kept["head.weight"].shape[1]), int(kept["head.weight"].shape[0]))
        earlier.load_state_dict({"weight": kept["head.weight"], "bias": kept["head.bias"]})
        device = next(module.parameters()).device
        return nn.Sequential(PromptedViT(module.backbone, kept["prompts"].clone()), earlier).to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": {str(j): dict(t) for j, t in self.tasks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tasks = {int(j): dict(t) for j, t in state["tasks"].items()}
