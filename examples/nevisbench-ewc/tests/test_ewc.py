"""The plugin's own tests: nevisbench's conformance kit (its cheap setting), and its cost against
finetuning: the Fisher estimate in end_task is compute the run is charged for."""

from nevisbench.testing import check_learner, run_learner


def test_ewc_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("ewc", tmp_path, cheap=True)
    assert summaries["continual"]["learner"] == "ewc"


def test_the_fisher_passes_are_charged(tmp_path):
    steps = ["scenario=continual", "train.max_steps=3", "learner.fisher_batches=2", "learner.fisher_batch_size=16"]
    ewc = run_learner("ewc", tmp_path / "ewc", steps)["_lines"]
    finetune = run_learner("finetune", tmp_path / "ft", ["scenario=continual", "train.max_steps=3"])["_lines"]
    # 3 training steps of 16 images plus 2 Fisher batches of 16 (forward + backward): about 5/3 of finetuning
    ratio = ewc[0]["flops"]["train"] / finetune[0]["flops"]["train"]
    assert 1.5 < ratio < 1.8
