"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), its cost against
finetuning, and what it exists for: less forgetting than finetuning, measured by revisit evaluation."""

import pytest

from nevisbench.testing import check_learner, run_learner

# two tasks long enough to learn and to forget: digits, then shapes, from the same backbone
CONTINUAL = ["scenario=continual", "eval.revisit=true", "stream.tasks=[digits,shapes]", "data.image_size=32",
             "train.max_steps=60", "budget.milestones=0"]


def test_er_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("er", tmp_path, cheap=True)
    assert summaries["continual"]["learner"] == "er"


def test_a_replay_step_costs_twice_a_finetuning_step(tmp_path):
    steps = ["scenario=continual", "train.max_steps=3"]
    er = run_learner("er", tmp_path / "er", steps)["_lines"]
    finetune = run_learner("finetune", tmp_path / "ft", steps)["_lines"]
    assert er[0]["flops"]["train"] == finetune[0]["flops"]["train"]  # nothing to replay on the first task
    assert er[1]["flops"]["train"] / finetune[1]["flops"]["train"] == pytest.approx(2.0, rel=0.01)


@pytest.mark.slow
def test_replay_forgets_less_than_finetuning(tmp_path):
    er = run_learner("er", tmp_path / "er", CONTINUAL)["continual"]
    finetune = run_learner("finetune", tmp_path / "ft", CONTINUAL)["continual"]
    assert all(a is not None for a in er["accuracy_matrix"][1])
    assert er["forgetting"] < finetune["forgetting"]
