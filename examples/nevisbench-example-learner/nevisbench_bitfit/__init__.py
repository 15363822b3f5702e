"""`bitfit`: only bias terms, BatchNorm affine parameters and the new head train (Ben Zaken et al.,
2022, "BitFit"); every convolution weight stays frozen. An example of a third-party learner."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nevisbench import ConfigError, Learner, LearnerConfig, TaskInfo, TaskModule

__all__ = ["BitFitConfig", "BitFitLearner"]


@dataclass
class BitFitConfig(LearnerConfig):
    name: str = "bitfit"
    train_batchnorm: bool = True  # also train BatchNorm scales and shifts

    def validate(self) -> None:
        if not isinstance(self.train_batchnorm, bool):
            raise ConfigError(f"Invalid value for 'learner.train_batchnorm': {self.train_batchnorm}")


class BitFitLearner(Learner):
    Config = BitFitConfig

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> TaskModule:
        for module in backbone.modules():
            is_bn = isinstance(module, nn.BatchNorm2d)
            for name, param in module.named_parameters(recurse=False):
                param.requires_grad_(name == "bias" or (is_bn and self.config.train_batchnorm))
        return self.task_module(backbone, task)
