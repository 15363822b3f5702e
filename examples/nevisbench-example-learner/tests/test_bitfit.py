"""The plugin's own tests: nevisbench's conformance kit, plus what is special about BitFit."""

from nevisbench.testing import check_learner


def test_bitfit_conforms_to_the_learner_api(tmp_path):
    summaries = check_learner("bitfit", tmp_path)
    assert summaries["transfer"]["learner"] == "bitfit"


def test_bitfit_costs_less_backward_than_finetuning(tmp_path):
    bitfit = check_learner("bitfit", tmp_path / "bitfit")["transfer"]["tasks"][0]["flops"]
    finetune = check_learner("finetune", tmp_path / "finetune")["transfer"]["tasks"][0]["flops"]
    assert bitfit["train_backward"] < finetune["train_backward"]
