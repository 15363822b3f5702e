"""The plugin's own tests: nevisbench's conformance kit on a vit_tiny (its cheap setting), the refusal
of a backbone it cannot prompt, its cost against finetuning the same ViT, and what it exists for:
frozen backbone, a prompt set per task, so it learns each task and forgets nothing."""

import pytest

from nevisbench import ConfigError
from nevisbench.config import compose
from nevisbench.testing import check_learner, run_learner

VIT = ["backbone.name=vit_tiny"]
CONTINUAL = [*VIT, "scenario=continual", "eval.revisit=true", "stream.tasks=[digits,shapes]", "data.image_size=32",
             "train.max_steps=60", "budget.milestones=0"]


def test_vpt_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("vpt", tmp_path, cheap=True, overrides=VIT)
    assert summaries["continual"]["learner"] == "vpt"
    assert summaries["continual"]["backbone"]["arch"] == "VisionTransformer"


def test_a_backbone_that_is_not_a_vit_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="vpt.*vit.*resnet18"):
        compose(["learner=vpt", "backbone.name=resnet18"])


def test_a_prompted_step_is_charged_against_finetuning_the_vit(tmp_path):
    steps = [*VIT, "train.max_steps=3", "stream.tasks=[faces]"]
    vpt = run_learner("vpt", tmp_path / "vpt", steps)["_lines"][0]["flops"]["train"]
    finetune = run_learner("finetune", tmp_path / "ft", steps)["_lines"][0]["flops"]["train"]
    # no weight gradients in the frozen ViT, but gradients flow back through every layer to the
    # prompts, on 5 + 8 tokens where finetuning has 5 (16 px, patch 8: 4 patches and the class token)
    assert 0.9 < vpt / finetune < 2.0


@pytest.mark.slow
def test_vpt_learns_each_task_and_forgets_nothing(tmp_path):
    summary = run_learner("vpt", tmp_path / "vpt", CONTINUAL)
    continual = summary["continual"]
    assert continual["accuracy_matrix"][1][0] == continual["accuracy_matrix"][0][0]  # digits scored with its prompts
    assert continual["forgetting"] == 0
    errors = [line["test_error"] for line in summary["_lines"]]
    assert errors[0] < 0.85  # digits: 10 classes, chance 0.9 (measured 0.815: prompts on a random frozen ViT)
