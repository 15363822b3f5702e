"""Fuzz the config layer: any override of any key is a config or a one-line ConfigError, nothing else."""

from __future__ import annotations

import random
import time
from dataclasses import fields

import pytest
from omegaconf import DictConfig, OmegaConf

from nevisbench.config import GROUPS, compose, group_options
from nevisbench.config.compose import compose_checked
from nevisbench.config.keys import override_literal
from nevisbench.errors import ConfigError
from nevisbench.registry import get_learner_class, learner_names

NASTY = ["nan", "inf", "-inf", "-1", "0", "1", "1e308", "-1e308", "''", "'", "\"", "'it\\'s'", "${oc.env:HOME}",
         "'${oc.env:HOME}'", "[]", "[1,2]", "[a,[b]]", "{}", "{a:1}", "null", "true", "x" * 5000, "'é ☃ 日本'",
         "a,b", "=", "\\", "'a\\nb'", "0x10", "1_000", "'#x: y'", "..", "/", "[", "}", "~", "%", "@"]


def _all_keys() -> list[str]:
    keys = set()
    for name in learner_names():
        keys |= {f"learner.{f.name}" for f in fields(get_learner_class(name).Config)}
    cfg = compose([])
    for section, node in cfg.items():
        if section in ("learner", "choices"):
            continue
        keys |= {f"{section}.{k}" for k in node} if isinstance(node, DictConfig) else {str(section)}
    return sorted(keys)


@pytest.mark.slow
def test_every_key_with_random_nasty_values_gives_a_config_or_a_one_line_config_error():
    rng = random.Random(20240601)
    keys = [*_all_keys(), *GROUPS, "nope", "train.nope", "learner.nope"]
    rng.shuffle(keys)
    assert len(keys) > 60  # every key of every group and of each learner's Config
    options = {group: group_options(group) for group in GROUPS}
    refused = tried = 0
    deadline = time.monotonic() + 25  # a bound for a busy machine; on an idle one every key is tried
    for key in keys:  # each key once, next to a random group option and sometimes another override
        if time.monotonic() > deadline:
            break
        tried += 1
        overrides = [f"{key}={rng.choice(NASTY)}"]
        if rng.random() < 0.3:
            overrides.append(f"{rng.choice(keys)}={rng.choice(NASTY)}")
        if rng.random() < 0.5:
            group = rng.choice(GROUPS)
            overrides.insert(0, f"{group}={rng.choice(options[group])}")
        try:
            cfg = compose(overrides)
        except ConfigError as exc:
            refused += 1
            assert str(exc) and "\n" not in str(exc), overrides
            continue
        assert OmegaConf.missing_keys(cfg) == set(), overrides
    assert tried >= 20 and 0 < refused < tried


def test_literal_of_any_string_parses_back_unchanged():
    """The resume path writes saved values as override literals: any string must survive."""
    rng = random.Random(7)
    alphabet = "a'\"\\:#{}$[],= \n\té☃@%~/."
    texts = ["${oc.env:HOME}", "\\${x}", "a\\", "'", "\\'", "it's", "#: y", "", "null", "1e3", "true", *(
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(200))]
    cfg = compose_checked([], saved=[f"stream.tasks={override_literal(texts)}"])
    assert list(cfg.stream.tasks) == texts
