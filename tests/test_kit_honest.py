"""The conformance kit can fail: each of its checks, on a learner built to break it
(tests/helpers/cheating_learners.py, registered by monkeypatching the registry as test_plugins.py does)."""

from __future__ import annotations

import pytest
from conftest import register_learner

from nevisbench import registry
from nevisbench.testing import RESULT_KEYS, SUMMARY_KEYS, check_learner, check_schema


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cheat", "message"),
    [
        ("NoFlopsLearner", "no training FLOPs counted for task faces"),
        ("FrozenWeightsLearner", "training did not change any weight on task faces"),
        ("NoisyLearner", "two runs with the same seed differ (not deterministic)"),
        ("ForgetfulLearner", "a run stopped after its first task and resumed differs from the uninterrupted run"),
    ],
)
def test_each_kit_check_fails_on_a_learner_built_to_break_it(monkeypatch, tmp_path, cheat, message):
    register_learner(monkeypatch, "cheat", f"cheating_learners:{cheat}")
    with pytest.raises(AssertionError) as info:
        check_learner("cheat", tmp_path, steps=2, scenarios=("transfer",))
    assert f"learner 'cheat' (transfer): {message}" in str(info.value)


@pytest.mark.slow
def test_an_honest_learner_passes_every_check_including_resume(tmp_path):
    summaries = check_learner("finetune", tmp_path, steps=2, scenarios=("continual",))
    assert summaries["continual"]["num_tasks"] == 2
    assert registry._entry_points()["finetune"].value != "nevisbench.testing:_WATCHED"  # the kit cleaned up


def _summary(*, drop: str | None = None, **changes) -> dict:
    line = {**dict.fromkeys(RESULT_KEYS), "task": "faces", "index": 0, "domain": "object", "num_classes": 2,
            "test_error": 0.5, "steps": 2, "dev_test_error": 0.5, "selected": {"rule": "last"},
            "flops": {"train": 1.0, "eval": 1.0}, "wall_seconds": 1.0, "status": "ok", "anytime": []}
    summary = {**dict.fromkeys(SUMMARY_KEYS), "learner": "x", "stream": "demo", "scenario": "transfer", "num_tasks": 1,
               "mean_test_error": 0.5,
               "total_flops": 2.0, "anytime_curve": [], "auc": None, "tasks": [line], "_lines": [line],
               "point": {"flops": 1.0, "error": 0.5}, "final_mean_error": 0.5, "final_mean_top1_error": 0.5,
               "final_mean_map_error": None}
    summary.pop(drop, None)
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = value
    return summary


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, None),
        ({"drop": "total_flops"}, "summary.json lacks ['total_flops']"),
        ({"anytime": None}, "results line lacks ['anytime']"),
        ({"flops": {"train": 1.0, "eval": 0.0}}, "no evaluation FLOPs counted for task faces"),
        ({"steps": 1}, "trained 1 steps, expected 2"),
        ({"test_error": 1.5}, "test_error 1.5 outside [0, 1]"),
        ({"status": "failed"}, "task faces failed"),
    ],
)
def test_the_schema_check_fails_on_each_broken_field(changes, message):
    summary = _summary(**changes)
    if message is None:
        check_schema(summary, "here", steps=2, num_tasks=1)
        return
    with pytest.raises(AssertionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_schema(summary, "here", steps=2, num_tasks=1)
