"""Forward transfer (continual scenario with `eval.revisit=true`): how much the tasks trained so far
help a task before it is trained.

Task j (j >= 1) is scored on its test split with the backbone it started from (the one the earlier
tasks left) under a head that needs no training: the nearest class mean of task j's training
features (cosine: features and means L2-normalised; on a multi-label task the mean of each label's
positives). The reference is the same score with the run's prepared backbone, the one a transfer
run starts every task from. Per task, `forward_transfer` = reference error - error before training
(in accuracy: before - reference); the summary's `forward_transfer` section gives the per-task
errors and their mean, `mean`. Positive: the earlier tasks made the features better for task j;
negative: worse. Task 0 starts from the prepared backbone itself, so it has none. Both passes over
the training split and both test scores are charged to the task as evaluation.
"""

from __future__ import annotations

import functools
from typing import Any

from omegaconf import DictConfig

from nevisbench.run.store.metric import StreamMetric, TaskProbe

__all__ = ["ForwardTransfer"]


class ForwardTransfer(StreamMetric):
    name = "forward_transfer"
    scalars = ("mean",)

    def enabled(self, cfg: DictConfig) -> bool:
        return cfg.scenario == "continual" and bool(cfg.eval.revisit)

    def measure(self, probe: TaskProbe) -> dict[str, float] | None:
        if probe.task.index == 0 or probe.start is None or probe.initial is None:
            return None
        before, reference = _error(probe, probe.start), _error(probe, probe.initial)
        return {"error": before, "reference_error": reference, "forward_transfer": reference - before}

    def compute(self, state: list[dict[str, Any]]) -> dict[str, Any] | None:
        measured = [(line["task"], m) for line in state if "forward_transfer" in (m := line.get(self.name) or {})]
        if not measured:
            return None
        values = [float(m["forward_transfer"]) for _, m in measured]
        return {"tasks": [task for task, _ in measured], "error": [m["error"] for _, m in measured],
                "reference_error": [m["reference_error"] for _, m in measured], "mean": sum(values) / len(values)}


def _error(probe: TaskProbe, backbone: Any) -> float:
    """The test error of `backbone` under the nearest-class-mean head of the task's training split."""
    import torch  # here, not at the top: `compare` and `plot` read this module's names without torch (~2 s)
    from torch import nn

    from nevisbench.api.learner import clone_module

    features_class, nearest_class = _modules()
    features = features_class(clone_module(backbone).to(probe.device), probe.task.num_classes)
    probe.evaluate(features, "train")  # its logits are zeros: only the features are wanted
    feats = nn.functional.normalize(torch.cat(features.seen), dim=1)
    labels = probe.data.train.labels.to(feats.device)
    classes = probe.task.num_classes
    targets = labels.float() if probe.data.multi_label else nn.functional.one_hot(labels.long(), classes).float()
    means = nn.functional.normalize(targets.T @ feats, dim=1)  # a class without examples stays at zero
    return probe.evaluate(nn.Sequential(features.backbone, nearest_class(means)), "test")


@functools.cache
def _modules() -> tuple[Any, Any]:
    """The two small modules `_error` wraps a backbone in (built on first use: see `_error`). Neither
    draws a random number, so measuring leaves the run's training as it would be without."""
    from torch import nn

    class Features(nn.Module):
        """Keeps the backbone's features of each batch; answers zero logits of the task's shape."""

        def __init__(self, backbone: nn.Module, num_classes: int) -> None:
            super().__init__()
            self.backbone, self.num_classes = backbone, num_classes
            self.seen: list[Any] = []

        def forward(self, x: Any) -> Any:
            out = self.backbone(x).float().flatten(1)
            self.seen.append(out.detach())
            return out.new_zeros(out.shape[0], self.num_classes)

    class NearestMean(nn.Module):
        """Cosine similarity of the (normalised) features to each class mean: the logits."""

        def __init__(self, means: Any) -> None:
            super().__init__()
            self.register_buffer("means", means)

        def forward(self, x: Any) -> Any:
            return nn.functional.normalize(x.float().flatten(1), dim=1) @ self.get_buffer("means").T

    return Features, NearestMean
