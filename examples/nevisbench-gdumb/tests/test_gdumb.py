"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), its cost against
finetuning (a step on the memory costs a finetuning step), its greedy class-balanced sampler, the
reset to the starting weights, and its forgetting measured by revisit evaluation."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from nevisbench_gdumb import GDumbConfig, GDumbLearner, GDumbModule
from torch import nn

from nevisbench import ConfigError, LearnerContext, TaskInfo
from nevisbench.testing import check_learner, run_learner

CONTINUAL = ["scenario=continual", "eval.revisit=true", "stream.tasks=[digits,shapes]", "data.image_size=32",
             "train.max_steps=60", "budget.milestones=0"]


def test_gdumb_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("gdumb", tmp_path, cheap=True)
    assert summaries["continual"]["learner"] == "gdumb"


def test_a_step_on_the_memory_costs_a_finetuning_step(tmp_path):
    steps = ["scenario=continual", "train.max_steps=3"]
    gdumb = run_learner("gdumb", tmp_path / "gdumb", steps)["_lines"]
    finetune = run_learner("finetune", tmp_path / "ft", steps)["_lines"]
    # one forward and backward of data.batch_size memory images per step; only the heads' share differs
    # (a memory batch spans earlier tasks' heads), a fraction of a percent of a ResNet step
    for ours, theirs in zip(gdumb, finetune, strict=True):
        assert ours["flops"]["train"] == pytest.approx(theirs["flops"]["train"], rel=0.01)
    assert sorted(gdumb[1]["learner_report"]["memory_per_task"]) == ["0", "1"]


def _learner(size: int, **config) -> GDumbLearner:
    context = LearnerContext(scenario="continual", seed=0, image_size=8, train=SimpleNamespace(label_smoothing=0.0),
                             feature_dim=4, data=SimpleNamespace())
    return GDumbLearner(GDumbConfig(memory_size=size, **config), context)


def _module(learner: GDumbLearner, index: int, classes: int) -> GDumbModule:
    task = TaskInfo(key=f"t{index}", name=f"t{index}", index=index, domain="object", num_classes=classes)
    module = learner.begin_task(task, nn.Linear(3, 4))
    assert isinstance(module, GDumbModule)
    return module


def _kept(module: GDumbModule) -> Counter:
    return Counter(zip(module.memory_task.tolist(), module.memory_class.tolist(), strict=True))


def test_the_greedy_sampler_keeps_the_memory_class_balanced_across_tasks():
    learner = _learner(size=12)
    first = _module(learner, 0, classes=2)
    labels = torch.tensor([0] * 30 + [1] * 6)  # an imbalanced task: class 0 five times as common
    first.remember(torch.arange(36), labels)
    assert _kept(first) == {(0, 0): 6, (0, 1): 6}  # balanced, though class 0 came first and more often
    kept = first.memory_index[first.memory_class == 1].tolist()
    assert sorted(kept) == list(range(30, 36))  # each slot holds the index of the example it kept
    learner.end_task(first.task, first)
    second = _module(learner, 1, classes=4)  # four new classes arrive: earlier ones give up room evenly
    second.remember(torch.arange(40), torch.arange(40) % 4)
    counts = _kept(second)
    assert sum(counts.values()) == 12 and max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 6
    # per-step state in buffers: a mid-task checkpoint saves and restores the memory with the weights
    assert {"memory_task", "memory_index", "memory_class"} <= set(second.state_dict())


def test_each_task_starts_from_the_streams_starting_weights_with_fresh_heads():
    learner = _learner(size=4)
    first = _module(learner, 0, classes=2)
    start = {k: v.clone() for k, v in first.backbone.state_dict().items()}
    with torch.no_grad():
        first.backbone.weight.add_(1.0)  # the first task trained it
    learner.end_task(first.task, first)
    second = learner.begin_task(TaskInfo(key="t1", name="t1", index=1, domain="object", num_classes=3), first.backbone)
    assert all(torch.equal(second.backbone.state_dict()[k], v) for k, v in start.items())
    assert set(second.old_heads) == {"0"}
    kept = _learner(size=4, reset=False)
    first = _module(kept, 0, classes=2)
    with torch.no_grad():
        first.backbone.weight.add_(1.0)
    moved = first.backbone.weight.clone()
    kept.end_task(first.task, first)
    second = kept.begin_task(TaskInfo(key="t1", name="t1", index=1, domain="object", num_classes=3), first.backbone)
    assert torch.equal(second.backbone.weight, moved)  # reset=false: the stream's weights carry on


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="learner.memory_size"):
        GDumbConfig(memory_size=0).validate()
    with pytest.raises(ConfigError, match="learner.reset"):
        GDumbConfig(reset="yes").validate()  # type: ignore[arg-type]


@pytest.mark.slow
def test_forgetting_is_measured_with_the_heads_the_memory_trained(tmp_path):
    gdumb = run_learner("gdumb", tmp_path / "gdumb", CONTINUAL)
    matrix, report = gdumb["continual"]["accuracy_matrix"], gdumb["_lines"][1]["learner_report"]
    assert matrix[1][0] is not None and gdumb["continual"]["forgetting"] is not None
    assert "stale_heads" not in gdumb["continual"]
    # 200 slots over digits' 10 classes and shapes' 5: the memory ends balanced over all 15
    assert sorted(report["memory_per_task"]) == ["0", "1"]
    assert report["largest_class"] - report["smallest_class"] <= 1
