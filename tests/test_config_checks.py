"""Values that would pass the schema and crash later are refused up front, in one line."""

from __future__ import annotations

import pytest

from nevisbench.config import compose
from nevisbench.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run_name=../x"], "Invalid value for 'run_name': '../x'; it must be one folder name"),
        (["run_name=/any/path"], "Invalid value for 'run_name': '/any/path'; it must be one folder name"),
        (["run_name=a/b"], "Invalid value for 'run_name': 'a/b'"),
        (["run_name=a\\b"], "no / or \\, at most 255 bytes"),
        (["run_name=.."], "Invalid value for 'run_name': '..'"),
        (["run_name=."], "Invalid value for 'run_name': '.'"),
        (["run_name=''"], "Invalid value for 'run_name': ''"),
        (["run_name=" + "r" * 256], "at most 255 bytes"),
        (["budget.flops_per_task=nan"], "Invalid value for 'budget.flops_per_task': nan; it must be a finite number"),
        (["budget.flops_per_task=inf"], "Invalid value for 'budget.flops_per_task': inf; it must be a finite number"),
        (["budget.flops_per_task=0"], "Invalid value for 'budget.flops_per_task': 0.0; it must be > 0"),
        (["budget.flops_per_task=-1"], "Invalid value for 'budget.flops_per_task': -1.0; it must be > 0"),
        (["seed=4294967295"], "Invalid value for 'seed': 4294967295; it must be in [0, 4294967291] (task i is seeded"),
        (["seed=4294967292"], "it must be in [0, 4294967291]"),
        (["seed=4294967295", "stream.tasks=[faces]"], "it must be in [0, 4294967294]"),
        (["trainer.devices=0"], "Invalid value for 'trainer.devices': 0; it must be a count >= 1, a list of distinct"),
        (["trainer.devices=-1"], "Invalid value for 'trainer.devices': -1;"),
        (["trainer.devices=[0,0]"], "Invalid value for 'trainer.devices': [0, 0];"),
        (["trainer.devices=[]"], "Invalid value for 'trainer.devices': [];"),
        (["trainer.devices=two"], "Invalid value for 'trainer.devices': 'two';"),
        (["train.label_smoothing=1"], "Invalid value for 'train.label_smoothing': 1.0; it must be in [0, 1)"),
        (["train.label_smoothing=-0.1"], "Invalid value for 'train.label_smoothing': -0.1; it must be in [0, 1)"),
        (["data.image_size=7"], "Invalid value for 'data.image_size': 7; it must be in [8, 1024]"),
        (["data.image_size=1025"], "Invalid value for 'data.image_size': 1025; it must be in [8, 1024]"),
        (["seed=${oc.env:HOME}"], "Invalid override 'seed=${oc.env:HOME}': interpolations are not allowed in overrides"),
        (["out_dir='${oc.env:HOME}'"], "interpolations are not allowed in overrides"),
        (["budget.first_milestone=nan"], "Invalid value for 'budget.first_milestone': nan; it must be a finite number"),
        (["budget.first_milestone=0"], "Invalid value for 'budget.first_milestone': 0.0; it must be in (0, 1]"),
        (["budget.first_milestone=1.5"], "Invalid value for 'budget.first_milestone': 1.5; it must be in (0, 1]"),
        (["budget.auc_min_flops=nan"], "Invalid value for 'budget.auc_min_flops': nan; it must be a finite number"),
        (["budget.auc_max_flops=inf"], "Invalid value for 'budget.auc_max_flops': inf; it must be a finite number"),
        (["budget.auc_min_flops=-1"], "Invalid value for 'budget.auc_min_flops': -1.0; it must be > 0"),
        (["budget.auc_max_flops=0"], "Invalid value for 'budget.auc_max_flops': 0.0; it must be > 0"),
        (["budget.auc_min_flops=1e15", "budget.auc_max_flops=1e15"], "Invalid AUC range: budget.auc_max_flops=1e+15 must exceed"),
        (["stream.tasks=[]"], "Invalid value for 'stream.tasks': []; list at least one task, or null for the whole stream"),
        (["train.lr=nan"], "Invalid value for 'train.lr': nan; it must be a finite number"),
        (["train.lr=inf"], "Invalid value for 'train.lr': inf; it must be a finite number"),
        (["train.momentum=-inf"], "Invalid value for 'train.momentum': -inf; it must be a finite number"),
        (["train.momentum=1"], "Invalid value for 'train.momentum': 1.0; it must be in [0, 1)"),
        (["train.weight_decay=nan"], "Invalid value for 'train.weight_decay': nan"),
        (["data.min_crop_scale=1.5"], "Invalid value for 'data.min_crop_scale': 1.5; it must be in (0, 1]"),
        (["data.device_share=2"], "Invalid value for 'data.device_share': 2.0; it must be in [0, 1]"),
        (["trainer.peak_flops=0"], "Invalid value for 'trainer.peak_flops': 0.0; it must be > 0"),
        (["learner=conv_prune", "learner.sparsity=nan"], "Invalid value for 'learner.sparsity': nan; it must be a finite number"),
        (["out_dir=''"], "Invalid value for 'out_dir': it must not be empty"),
        (["logger.project=''"], "Invalid value for 'logger.project': it must not be empty"),
        (["out_dir=" + "d" * 5000], "is not a usable path"),
    ],
)
def test_values_that_would_crash_later_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [["run_name=my-run_1.2"], ["seed=4294967291"], ["trainer.devices=auto"], ["trainer.devices=[0,1]"],
     ["train.label_smoothing=0.99"], ["data.image_size=8"], ["data.image_size=1024"], ["budget.first_milestone=1"],
     ["budget.flops_per_task=3e12"], ["stream.tasks=[faces]"]],
)
def test_values_at_the_edge_of_their_range_are_accepted(overrides):
    compose(overrides)
