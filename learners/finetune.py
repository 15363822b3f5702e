"""`finetune`: dense finetuning, every backbone weight and a new linear head are trained."""

from __future__ import annotations

from dataclasses import dataclass

from nevisbench.api.learner import Learner, LearnerConfig

__all__ = ["FinetuneConfig", "FinetuneLearner"]


@dataclass
class FinetuneConfig(LearnerConfig):
    name: str = "finetune"


class FinetuneLearner(Learner):
    """The dense baseline: the base class's behaviour, with nothing frozen or pruned."""

    Config = FinetuneConfig
