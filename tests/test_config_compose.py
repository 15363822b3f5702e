"""Composition through Hydra's compose API: no leaked state, plugin learners, translated errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from nevisbench import registry
from nevisbench.api.learner import Learner, LearnerConfig
from nevisbench.config import compose
from nevisbench.errors import ConfigError


@dataclass
class ToyConfig(LearnerConfig):
    name: str = "toy"
    rank: int = 4
    scale: float = 0.5


class ToyLearner(Learner):
    """A plugin learner without a YAML file under configs/learner/."""

    Config = ToyConfig


@pytest.fixture
def toy_plugin(monkeypatch):
    found = dict(registry._entry_points())
    found["toy"] = EntryPoint(name="toy", value=f"{__name__}:ToyLearner", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: found)


def test_composition_leaves_no_hydra_state_cwd_or_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(ConfigStore.instance().repo)
    cfg = compose(["learner=conv_prune", "stream=short"])
    assert cfg.learner.name == "conv_prune" and cfg.stream.name == "short"
    assert not GlobalHydra.instance().is_initialized()
    assert set(ConfigStore.instance().repo) == before
    assert os.getcwd() == str(tmp_path) and list(tmp_path.iterdir()) == []  # no outputs/, no .hydra/


def test_choices_record_the_option_of_each_group_not_the_learner_name():
    cfg = compose(["learner=ft_head", "trainer=cpu", "logger=wandb"])
    assert cfg.choices == {"learner": "ft_head", "stream": "demo", "trainer": "cpu", "logger": "wandb", "protocol": "fast",
                           "search": "none"}
    assert cfg.learner.name == "ft_block" and cfg.learner.first_trained_block == 4


def test_learner_keys_are_typed_by_the_learners_config_dataclass():
    cfg = compose(["learner=conv_prune", "learner.groups=2"])
    assert OmegaConf.get_type(cfg.learner).__name__ == "ConvPruneConfig" and cfg.learner.groups == 2


def test_a_plugin_learner_without_a_yaml_file_is_an_option_with_its_config_defaults(toy_plugin):
    cfg = compose(["learner=toy", "learner.rank=8"])
    assert cfg.choices.learner == "toy" and dict(cfg.learner) == {"name": "toy", "rank": 8, "scale": 0.5}
    with pytest.raises(ConfigError, match="'rnak' is not a key of learner. Valid: name, rank, scale. Did you mean 'rank'?"):
        compose(["learner=toy", "learner.rnak=8"])
    with pytest.raises(ConfigError, match="Invalid value for 'learner.rank': 'big' is not an integer"):
        compose(["learner=toy", "learner.rank=big"])


def test_a_composition_inside_a_host_program_that_uses_hydra_keeps_its_instance():
    from hydra import initialize_config_module

    with initialize_config_module(config_module="hydra.conf", version_base="1.3"):
        host = GlobalHydra.instance().hydra
        compose([])
        assert GlobalHydra.instance().hydra is host


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner=fintune", "Unknown learner 'fintune'. Valid: adp1x1, block_0to0_ft_all"),
        ("learner=fintune", "Did you mean 'finetune'? See `nevisbench list learners`."),
        ("trainer=gpu", "Unknown trainer 'gpu'. Valid: cpu, default."),
        ("learner=finetune,conv_prune", "Bad override 'learner=finetune,conv_prune': one value per key here"),
        ("+foo=1", "Bad override '+foo=1': keys cannot be added or deleted (+, ++, ~)"),
        ("~seed", "Bad override '~seed': expected key=value"),
        ("~seed=0", "Bad override '~seed=0': keys cannot be added or deleted"),
        ("learner@x=finetune", "Bad override 'learner@x=finetune': packages (@) cannot be changed"),
        ("hydra.run.dir=/tmp/x", "Unknown config key 'hydra.run.dir': 'hydra' is not a key of the root. Valid: learner"),
        ("hydra/launcher=basic", "'hydra' is not a key of the root"),
        ("seed=[1,2", "Bad override 'seed=[1,2':"),
        ("stream.tasks={a:1}", "Invalid value for 'stream.tasks': '{a:1}' is not a list"),
        ("seed.x=1", "Unknown config key 'seed.x': 'seed' is a value, not a section"),
        ("train=x", "Invalid value for 'train': 'x' is not a section (set its keys instead)"),
    ],
)
def test_hydra_errors_become_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        compose([override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)
