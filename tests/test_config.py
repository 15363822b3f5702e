"""Config composition and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nevisbench.config import GROUPS, compose, group_options
from nevisbench.errors import ConfigError


def test_default_composition_has_every_section_and_no_missing_value():
    cfg = compose([])
    assert cfg.choices == {"learner": "finetune", "stream": "demo", "trainer": "default", "logger": "local",
                           "protocol": "fast", "search": "none"}
    assert OmegaConf.missing_keys(cfg) == set()
    # the demo stream's _global_ section picks the small backbone and small images
    assert cfg.backbone.name == "resnet18" and cfg.backbone.weights == "none"
    assert cfg.data.image_size == 32
    assert cfg.scenario == "transfer" and cfg.seed == 0


# options that need a value of the user's to compose (search=custom: the space to search)
REQUIRED_WITH = {("search", "custom"): ["search.space.train.lr=loguniform(1e-4,1e-1)"]}


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    for option in group_options(group):
        cfg = compose([f"{group}={option}", *REQUIRED_WITH.get((group, option), [])])
        assert cfg.choices[group] == option


def test_dotted_overrides_are_typed():
    cfg = compose(["seed=1", "train.max_steps=50", "data.batch_size=32", "out_dir=/tmp/x",
                   "train.lr=3e-2", "stream.tasks=[digits,faces]", "scenario=continual"])
    assert cfg.seed == 1 and cfg.train.max_steps == 50 and cfg.data.batch_size == 32
    assert cfg.out_dir == "/tmp/x" and cfg.train.lr == pytest.approx(0.03)
    assert list(cfg.stream.tasks) == ["digits", "faces"] and cfg.scenario == "continual"


def test_command_line_beats_group_global_section():
    assert compose(["data.image_size=48"]).data.image_size == 48
    assert compose(["backbone.name=resnet34"]).backbone.name == "resnet34"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner=nope", "Unknown learner 'nope'. Valid: adp1x1, block_0to0_ft_all, block_0to1_ft_all"),
        ("learner.sparsity=2", "'sparsity' is not a key of learner"),
        ("learner=fintune", "Did you mean 'finetune'?"),
        ("stream=nope", "Unknown stream 'nope'. Valid: demo"),
        ("scenario=nope", "Unknown value for 'scenario': 'nope'. Valid: continual, transfer"),
        ("foo.bar=1", "Unknown config key 'foo.bar': 'foo' is not a key of the root. Valid: learner, stream"),
        ("train.max_stepz=3", "Did you mean 'max_steps'?"),
        ("train.max_steps=abc", "Invalid value for 'train.max_steps': 'abc' is not an integer"),
        ("train.lr=fast", "Invalid value for 'train.lr': 'fast' is not a number"),
        ("seed=-1", "Invalid value for 'seed': -1; it must be >= 0"),
        ("train.max_steps=0", "Invalid value for 'train.max_steps': 0; it must be >= 1"),
        ("train.optimizer=adam", "Did you mean 'adamw'?"),
        ("backbone.name=resnet5", "Unknown value for 'backbone.name': 'resnet5'"),
        ("backbone.weights=/no/such/file.pth", "'/no/such/file.pth' is neither a file nor one of imagenet"),
        ("trainer.precision=bf16", "Unknown value for 'trainer.precision': 'bf16'"),
        ("learner.sparsity=0.5", "'sparsity' is not a key of learner"),
        ("learner.name=x", "Set 'learner.name' by choosing the option: learner=x"),
        ("budget.count_search=false", "It was renamed: budget.x=train+search (count_search=true) or budget.x=train (false)"),
        ("budget.x=eval", "Unknown value for 'budget.x': 'eval'. Valid: train, train+eval, train+search, train+search+eval"),
        ("no_equals_sign", "Bad override 'no_equals_sign': expected key=value"),
    ],
)
def test_bad_input_is_one_line_naming_value_and_choices(override, message):
    with pytest.raises(ConfigError) as info:
        compose([override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        compose([f"out_dir={target}"])
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learner=conv_prune", "learner.sparsity=1.5"], "Invalid value for 'learner.sparsity': 1.5; it must be in [0, 1)"),
        (["learner=conv_prune", "learner.impl=fast"], "Unknown value for 'learner.impl': 'fast'. Valid: grouped, masked"),
        (["learner=weight_prune", "learner.scope=layer"], "Unknown value for 'learner.scope': 'layer'. Valid: global, local"),
        (["learner=channel_prune", "learner.signal=taylor"], "Valid: magnitude, random"),
        (["learner=ft_block_1to3", "learner.first_trained_block=5"], "it must be 0..3 (ft_block_Xto3) or 4 (ft_head)"),
        (["learner=block_0to1_ft_all", "learner.last_block=7"], "it must be 0..3"),
        (["learner=adp1x1", "learner.targets=some"], "Valid: all, spatial"),
        (["learner=conv_prune", "learner.sparsty=0.5"], "Did you mean 'sparsity'?"),
    ],
)
def test_learner_options_are_validated(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    assert message in str(info.value)
