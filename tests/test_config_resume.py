"""A run's config.yaml is real YAML and composes back to the same config on resume."""

from __future__ import annotations

import re

import pytest
import yaml

from nevisbench.config import compose, to_yaml
from nevisbench.config.compose import compose_checked
from nevisbench.config.keys import override_literal
from nevisbench.errors import ConfigError

NASTY = ["it's", 'say "hi"', "back\\slash\\", "a: b", "# not a comment", "two\nlines", "ünïcödé ☃ 日本",
         "${oc.env:HOME}", "\\${x}", "'quoted'", "{a: 1}", "[x]", "null", "  spaced  "]


def _saved_run(tmp_path, extra: list[str]):
    cfg = compose_checked([], saved=[f"stream.tasks={override_literal(NASTY)}",
                                     f"logger.entity={override_literal(NASTY[0] + NASTY[5])}", *extra])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    return cfg, run_dir


def test_config_yaml_of_nasty_strings_is_yaml_and_resumes_to_the_same_config(tmp_path):
    cfg, run_dir = _saved_run(tmp_path, ["learner=ft_head", "run_name='it\\'s: #1'"])
    text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text)["stream"]["tasks"] == NASTY
    resumed = compose([f"resume={run_dir}"])
    assert list(resumed.stream.tasks) == NASTY and resumed.run_name == "it's: #1"
    assert resumed.logger.entity == NASTY[0] + NASTY[5]
    assert resumed.choices == cfg.choices and resumed.resume == str(run_dir)


def test_resume_refuses_another_learner_option_before_composing_it(tmp_path):
    _, run_dir = _saved_run(tmp_path, ["learner=ft_head"])
    with pytest.raises(ConfigError, match=r"Cannot resume '.*' with a different config: choices.learner \('ft_head' -> 'conv_prune'\)"):
        compose([f"resume={run_dir}", "learner=conv_prune"])


def test_resume_with_another_logger_takes_that_loggers_values(tmp_path):
    _, run_dir = _saved_run(tmp_path, [])
    resumed = compose([f"resume={run_dir}", "logger=wandb"])
    assert resumed.choices.logger == "wandb" and resumed.logger.name == "wandb"


def test_a_config_yaml_that_is_not_yaml_is_a_clear_error(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 'unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"Cannot resume '.*': its config.yaml cannot be read \(while scanning"):
        compose([f"resume={tmp_path}"])
    (tmp_path / "config.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="its config.yaml does not hold a mapping"):
        compose([f"resume={tmp_path}"])


@pytest.mark.parametrize(("count_search", "x"), [(True, "train+search"), (False, "train")])
def test_a_run_saved_with_count_search_resumes_with_its_budget_x(tmp_path, count_search, x):
    """`budget.count_search` became `budget.x`: a run folder written before resumes, its choice kept."""
    cfg, run_dir = _saved_run(tmp_path, [])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    del saved["budget"]["x"]
    saved["budget"]["count_search"] = count_search
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    assert compose([f"resume={run_dir}"]).budget.x == x
    other = "train+eval"
    with pytest.raises(ConfigError, match=re.escape(f"with a different config: budget.x ('{x}' -> '{other}')")):
        compose([f"resume={run_dir}", f"budget.x={other}"])
