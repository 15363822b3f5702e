"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), its cost against
finetuning, and what it exists for: less forgetting than finetuning, measured by revisit evaluation."""

import pytest

from nevisbench.testing import check_learner, run_learner

CONTINUAL = ["scenario=continual", "eval.revisit=true", "stream.tasks=[digits,shapes]", "data.image_size=32",
             "train.max_steps=60", "budget.milestones=0"]


def test_lwf_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("lwf", tmp_path, cheap=True)
    assert summaries["continual"]["learner"] == "lwf"


def test_the_teacher_forward_is_charged_as_training(tmp_path):
    steps = ["scenario=continual", "train.max_steps=3"]
    lwf = run_learner("lwf", tmp_path / "lwf", steps)["_lines"]
    finetune = run_learner("finetune", tmp_path / "ft", steps)["_lines"]
    assert lwf[0]["flops"]["train"] == finetune[0]["flops"]["train"]  # no teacher on the first task
    ratio = lwf[1]["flops"]["train"] / finetune[1]["flops"]["train"]
    assert 1.25 < ratio < 1.40  # one more forward of the backbone: about 4/3 (the stem's input needs no gradient)


@pytest.mark.slow
def test_lwf_forgets_less_than_finetuning(tmp_path):
    lwf = run_learner("lwf", tmp_path / "lwf", CONTINUAL)["continual"]
    finetune = run_learner("finetune", tmp_path / "ft", CONTINUAL)["continual"]
    assert all(a is not None for a in lwf["accuracy_matrix"][1])
    assert lwf["forgetting"] < finetune["forgetting"]
