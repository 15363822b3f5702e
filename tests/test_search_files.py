"""A search's resume files are checked when read back: a trial record or winner's weights that is
damaged, edited, truncated or foreign is one DataError naming the file and the fix, never a
traceback (nevisbench.run.store.search_records)."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

from nevisbench.compute.flops import FlopTally
from nevisbench.config import compose
from nevisbench.errors import DataError
from nevisbench.run.search.study import TaskSearch
from nevisbench.run.task.trial import Trial


def _search(tmp_path) -> TaskSearch:
    return TaskSearch(compose([*TINY, "search=nevis_cheap"]), 0, tmp_path)


def _record() -> dict:
    trial = Trial(k=1, overrides={"train.lr": 0.01}, dev_error=0.25, failure=None, tally=FlopTally(train_forward=1e6, eval=2e5),
                  steps=4, anytime=[{"fraction": 0.5, "step": 2, "train_flops": 1e6, "train_flops_executed": 1e6,
                                     "train_seconds": 0.1, "dev_error": 0.3, "lr": 0.01}],
                  selected={"rule": "best_dev", "step": 2, "dev_error": 0.25},
                  budget={"flops_per_task": 5e9, "measure": "algorithmic", "spent": 1e6, "ratio": 2e-4}, seconds=1.5)
    return trial.record(with_learner=False)


def _set(path: str, value):
    """A change to the record at a dotted path (`tally.eval`, `anytime.0.step`); value ... deletes."""
    def change(record):
        *parents, last = path.split(".")
        node = record
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key]
        else:
            node[key] = value
        return record
    return change


DAMAGE = {  # how a record can be wrong -> what the message says is wrong
    "a list": (lambda r: list(r.items()), "not a trial record"),
    "a tensor": (lambda r: torch.zeros(3), "not a trial record"),
    "no dev_error": (_set("dev_error", ...), "no dev_error"),
    "an extra key": (_set("surprise", 1), "unexpected surprise"),
    "an extra tally key": (_set("tally.not_a_field", 1.0), "unexpected not_a_field"),
    "a missing tally key": (_set("tally.eval", ...), "no eval"),
    "a tally as a list": (_set("tally", [1.0]), "'tally' is list"),
    "a string number": (_set("tally.eval", "2e5"), "'tally.eval' is '2e5'"),
    "a negative flop count": (_set("tally.search", -1.0), "out of range"),
    "an infinite flop count": (_set("tally.search", math.inf), "out of range"),
    "dev_error as text": (_set("dev_error", "0.25"), "'dev_error' is '0.25'"),
    "dev_error over 1": (_set("dev_error", 1.5), "out of range"),
    "dev_error NaN": (_set("dev_error", math.nan), "out of range"),
    "steps as a float": (_set("steps", 2.5), "not an integer"),
    "steps as a bool": (_set("steps", True), "not an integer"),
    "steps negative": (_set("steps", -3), "out of range"),
    "anytime as a dict": (_set("anytime", {}), "not a list"),
    "a milestone without step": (_set("anytime.0.step", ...), "'anytime[0]' has no step"),
    "a milestone as a number": (_set("anytime.0", 3), "'anytime[0]' is int"),
    "a milestone lr as text": (_set("anytime.0.lr", "0.01"), "'anytime[0].lr' is '0.01'"),
    "a negative milestone lr": (_set("anytime.0.lr", -0.1), "out of range"),
    "a milestone with an extra key": (_set("anytime.0.momentum", 0.9), "'anytime[0]' has unexpected momentum"),
    "selected as a list": (_set("selected", ["best_dev"]), "not a selection rule"),
    "an unknown rule": (_set("selected.rule", "magic"), "not a selection rule"),
    "best_dev without step": (_set("selected.step", ...), "'selected' has no step"),
    "a foreign measure": (_set("budget.measure", "joules"), "not one of algorithmic"),
    "budget as text": (_set("budget", "5e9"), "'budget' is str"),
    "overrides as a list": (_set("overrides", [["train.lr", 0.01]]), "'overrides' is not a mapping"),
    "failure as a number": (_set("failure", 3), "'failure' is int"),
    "pruned as text": (_set("pruned", "no"), "not true/false"),
    "learner as a list": (_set("learner", [1]), "not a learner state"),
    "another trial's record": (_set("k", 0), "the record of trial 0, not of trial 1"),
    "a bad digest": (_set("weights_sha256", "abc"), "not a SHA-256"),
    "no digest": (_set("weights_sha256", ...), "no weights_sha256"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_malformed_trial_record_is_one_line_naming_the_file(tmp_path, damage):
    search = _search(tmp_path)
    search.save(1, _record(), None)
    assert search.load(1)["dev_error"] == 0.25  # the record as saved reads back
    change, expected = DAMAGE[damage]
    record = torch.load(search.record_path(1), weights_only=True)
    torch.save(change(record), search.record_path(1))
    with pytest.raises(DataError) as caught:
        search.load(1)
    message = str(caught.value)
    assert expected in message and str(search.record_path(1)) in message and "\n" not in message
    assert "to train that trial again" in message and f"delete {search.folder}" in message


def test_every_record_a_real_search_saves_reads_back(tmp_path, monkeypatch):
    """The records `TaskSearch.save` writes in a real (tiny) search pass the checks `load` makes on
    a resume: the checks follow what the runner writes (a milestone's lr, a learner without an
    optimizer's None lr, ...), not a hand-written copy of it."""
    from nevisbench.run.runner import run

    saved: list[tuple[int, Path]] = []
    original = TaskSearch.save

    def save(self, k, record, weights):
        original(self, k, record, weights)
        saved.append((k, self.record_path(k)))
        assert self.load(k)["anytime"] == record["anytime"]  # read back exactly as written, every field checked

    monkeypatch.setattr(TaskSearch, "save", save)
    run(compose([*TINY, "budget.milestones=2", "stream.tasks=[faces]", "search=nevis_cheap", "run_name=r",
                 f"out_dir={tmp_path}"]))
    assert [k for k, _ in saved] == [0, 1, 2, 3]  # nevis_cheap's four trials, each saved and read back


@pytest.mark.parametrize("content", [b"", b"\x80\x04truncated", b"not a torch file at all\n"])
def test_an_unreadable_trial_record_is_one_line_naming_the_file(tmp_path, content):
    search = _search(tmp_path)
    search.save(1, _record(), None)
    search.record_path(1).write_bytes(search.record_path(1).read_bytes()[:40] if content == b"" else content)
    with pytest.raises(DataError, match=r"the search record .*trial_1\.pt is damaged .*to train that trial again"):
        search.load(1)


def _weights() -> dict:
    return {"layer.weight": torch.ones(2, 3), "layer.bias": torch.zeros(2)}


WEIGHTS_DAMAGE = {  # how the winner's weights can be wrong -> what the message says
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:100]), "are not the ones trial 1 saved"),
    "foreign": (lambda path: torch.save({"other.weight": torch.ones(5)}, path), "are not the ones trial 1 saved"),
    "edited": (lambda path: torch.save({**_weights(), "layer.bias": torch.ones(2)}, path), "are not the ones trial 1 saved"),
    "missing": (lambda path: path.unlink(), "cannot be read"),
}


@pytest.mark.parametrize("damage", WEIGHTS_DAMAGE, ids=list(WEIGHTS_DAMAGE))
def test_damaged_or_foreign_winner_weights_are_one_line_naming_the_file(tmp_path, damage):
    search = _search(tmp_path)
    search.save(1, _record(), _weights())
    assert torch.equal(search.load_weights(1)["layer.weight"], torch.ones(2, 3))  # as saved, they read back
    change, expected = WEIGHTS_DAMAGE[damage]
    change(search.weights_path(1))
    with pytest.raises(DataError) as caught:
        search.load_weights(1)
    message = str(caught.value)
    assert expected in message and str(search.weights_path(1)) in message and "to train that trial again" in message


def test_weights_of_the_right_digest_that_are_not_a_state_dict_and_a_winner_without_weights_are_refused(tmp_path):
    search = _search(tmp_path)
    search.save(1, _record(), [torch.ones(2)])  # saved by a broken writer: its digest matches
    with pytest.raises(DataError, match="are not a model's weights"):
        search.load_weights(1)
    search.save(1, _record(), None)
    with pytest.raises(DataError, match="keeps no weights"):
        search.load_weights(1)


@pytest.mark.slow
def test_a_tampered_search_record_stops_the_resume_in_one_line_and_its_fix_works(tmp_path):
    """End to end: every trial finished, the run killed before its results line; an edited record
    is one line on resume (no traceback); deleting it as told retrains that trial only."""
    common = [*TINY, "stream.tasks=[faces]", "search=custom", "search.trials=2", "search.sampler=grid",
              "search.space.train.lr=choice(0.001,0.1)", f"out_dir={tmp_path}", "run_name=r"]
    killed = run_cli("run", *common, env_extra={"NEVISBENCH_FAULT": "write:results.jsonl"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    record_path = tmp_path / "r" / "state" / "search_0" / "trial_0.pt"
    record = torch.load(record_path, weights_only=True)
    record["tally"]["not_a_field"] = 1.0
    torch.save(record, record_path)
    refused = run_cli("run", f"resume={tmp_path / 'r'}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"the search record {record_path} is damaged ('tally' has unexpected not_a_field)" in refused.stderr
    record_path.unlink()
    (record_path.parent / "trial_0_weights.pt").unlink(missing_ok=True)
    done = run_cli("run", f"resume={tmp_path / 'r'}")
    assert done.returncode == 0, done.stderr[-2000:]
    # the rerun trial saved its weights after the later trial's: those are kept, so a later winner is
    # scored from its own weights, not trained again
    assert "1 of 2 trials finished before the resume" in done.stdout and "trained again" not in done.stdout
    assert (tmp_path / "r" / "summary.json").exists()
