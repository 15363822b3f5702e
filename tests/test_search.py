"""Per-task hyperparameter search (search=nevis_cheap | nevis | custom): every trial's compute is
charged, the winner is the lowest dev error, runs repeat, and a search killed mid-task resumes
without rerunning its finished trials. Tiny real runs on the CPU."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, register_learner, run_cli, without_timing

from nevisbench.config import compose
from nevisbench.errors import ConfigError, PluginError
from nevisbench.run.runner import run

RUN = [*TINY, "train.max_steps=50", "budget.flops_per_task=5e9", "budget.milestones=2", "stream.tasks=[faces]",
       "search=nevis_cheap", "run_name=r"]






def _line(run_dir: Path) -> dict:
    (line,) = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    return line


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    proc = run_cli("run", *RUN, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    return out / "r"


@pytest.mark.slow
def test_nevis_cheap_charges_every_trial_and_picks_the_lowest_dev_error(reference, tmp_path):
    line = _line(reference)
    search = line["search"]
    trials = search["trials"]
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    assert sorted(t["overrides"]["train.lr"] for t in trials) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert {t["overrides"]["train.label_smoothing"] for t in trials} == {0.15}
    errors = [t["dev_error"] for t in trials]
    winner = search["winner"]
    assert errors[winner] == min(errors) and errors.index(min(errors)) == winner  # ties: the earlier trial
    assert line["dev_error"] == errors[winner]
    # the winner's training is `train`, the three others' `search`, every dev evaluation `eval`
    assert all(t["train_flops"] > 0 for t in trials)
    assert line["flops"]["train"] == trials[winner]["train_flops"]
    losers = sum(t["train_flops"] for t in trials if t["trial"] != winner)
    assert math.isclose(line["flops"]["search"], losers, rel_tol=1e-12)
    assert line["flops"]["eval"] > sum(t["eval_flops"] for t in trials)  # plus the winner's dev_test and test
    assert line["budget"]["spent"] <= 5e9 and line["steps"] == trials[winner]["steps"]
    summary = json.loads((reference / "summary.json").read_text())
    assert math.isclose(summary["point"]["flops"], line["flops"]["train"] + line["flops"]["search"], rel_tol=1e-12)
    assert summary["point_without_search"]["flops"] == line["flops"]["train"]
    assert not (reference / "state").exists()

    # the same seed: the same trials, the same winner, the same compute (in-process this time)
    again = run(compose([*RUN, f"out_dir={tmp_path}"]))
    assert without_timing(_line(again)) == without_timing(line)
    # another seed: as dm_nevis, the same draws (seeded with the task index); seeded with the run
    # seed too (search.seed_with_run_seed=true), it draws the grid in another order
    other = run(compose([*RUN, "seed=7", f"out_dir={tmp_path}", "run_name=s7"]))
    assert [t["overrides"] for t in _line(other)["search"]["trials"]] == [t["overrides"] for t in trials]
    other = run(compose([*RUN, "seed=7", "search.seed_with_run_seed=true", f"out_dir={tmp_path}", "run_name=s7r"]))
    assert [t["overrides"] for t in _line(other)["search"]["trials"]] != [t["overrides"] for t in trials]


@pytest.mark.slow
def test_sigkill_during_the_third_trial_then_resume_reruns_only_unfinished_trials(reference, tmp_path):
    run_dir = tmp_path / "r"
    killed = run_cli("run", *RUN, f"out_dir={tmp_path}", fault="trial:0:2")
    assert killed.returncode == -signal.SIGKILL
    kept = sorted(p.name for p in (run_dir / "state" / "search_0").glob("trial_?.pt"))
    assert kept == ["trial_0.pt", "trial_1.pt"] and not (run_dir / "results.jsonl").exists()
    best = min((0, 1), key=lambda k: torch.load(run_dir / "state" / "search_0" / f"trial_{k}.pt")["dev_error"])
    weights = sorted(p.name for p in (run_dir / "state" / "search_0").glob("trial_*_weights.pt"))
    assert weights == [f"trial_{best}_weights.pt"]
    # resumed with a crash point at the first trial: it must not run again
    done = run_cli("run", f"resume={run_dir}", fault="trial:0:0")
    assert done.returncode == 0, done.stderr
    assert "2 of 4 trials finished before the resume" in done.stdout
    assert "trained again" not in done.stdout  # the read-back best keeps its saved weights (none retrained)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert without_timing(summary) == without_timing(json.loads((reference / "summary.json").read_text()))


@pytest.mark.slow
def test_custom_space_runs_its_trials_and_logs_them_to_wandb(tmp_path):
    cfg = compose([*TINY, "stream.tasks=[faces]", "search=custom", "search.space.train.lr=loguniform(1e-4,1e-1)",
                   "search.trials=3", "logger=wandb", f"out_dir={tmp_path}"])
    run_dir = run(cfg)
    trials = _line(run_dir)["search"]["trials"]
    assert len(trials) == 3 and len({t["overrides"]["train.lr"] for t in trials}) == 3
    assert all(1e-4 <= t["overrides"]["train.lr"] <= 1e-1 for t in trials)
    tables = list(run_dir.glob("wandb/offline-run-*/files/media/table/search/trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["task", "trial", "overrides", "dev_error"]
    assert [row[3] for row in table["data"]] == [t["dev_error"] for t in trials]


@pytest.mark.parametrize(("override", "message"), [
    ("search.space.train.lr=loguniform(1e-4)", "Invalid value for 'search.space.train.lr': 'loguniform(1e-4)'"),
    ("search.space.train.lr=logunif(1e-4,1e-1)", "not a distribution"),
    ("search.space.train.lr=uniform(0,x)", "two finite numbers"),
    ("search.space.train.lr=loguniform(0,1)", "loguniform needs 0 < low"),
    ("search.space.data.batch_size=choice(8,16)", "only train.* and learner.* keys"),
    ("search.space.train.momentum=choice(0.5,2)", "'train.momentum': 2"),
    ("search.parallel=0", "Invalid value for 'search.parallel': 0; it must be >= 1"),
    ("search.parallel=2 search.sampler=tpe", "search.parallel=1 with tpe"),
    ("search.pruner=halving", "Invalid value for 'search.pruner': 'halving'; valid: none, successive_halving, hyperband"),
    ("search.pruner=hyperband search.parallel=2", "valid: search.pruner=none, or search.parallel=1"),
    ("search.pruner=successive_halving budget.milestones=1", "valid: budget.milestones >= 2"),
])
def test_a_malformed_search_is_a_one_line_error_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=None) as caught:
        compose([*TINY, "search=custom", "search.space.train.lr=uniform(0.01,0.1)", *override.split()])
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_the_cli_refuses_a_malformed_space_without_creating_a_run(tmp_path):
    proc = run_cli("run", *TINY, "search=custom", "search.space.train.lr=choice()", f"out_dir={tmp_path}")
    assert proc.returncode == 2 and "search.space.train.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_search_none_writes_no_search_record(tmp_path):
    run_dir = run(compose([*TINY, "stream.tasks=[faces]", f"out_dir={tmp_path}"]))
    line = _line(run_dir)
    assert "search" not in line and line["flops"]["search"] == 0.0


@pytest.mark.slow
def test_a_learner_key_read_by_prepare_is_applied_per_trial_and_the_winners_learner_carries_on(tmp_path):
    """search.space.learner.sparsity: each trial builds and prepares its own learner, so a trial at
    sparsity 0.9 really trains a sparser model (fewer algorithmic FLOPs per step) than one at 0.25;
    in continual the winner's learner and masked backbone carry on to the next task."""
    run_dir = run(compose([*TINY, "learner=weight_prune", "scenario=continual", "stream.tasks=[digits,faces]",
                           "search=custom", "search.sampler=grid", "search.space.learner.sparsity=choice(0.25,0.9)",
                           "search.trials=2", f"out_dir={tmp_path}"]))
    first, second = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    per_step = {t["overrides"]["learner.sparsity"]: t["train_flops"] / t["steps"] for t in first["search"]["trials"]}
    assert set(per_step) == {0.25, 0.9}
    assert per_step[0.9] < 0.5 * per_step[0.25]  # kept fraction 0.1 vs 0.75 of the conv FLOPs
    winner = first["search"]["winner_overrides"]["learner.sparsity"]
    # task 2 starts from the carried backbone, pruned at the winner's sparsity, whichever value its trials draw
    later = [t["train_flops"] / t["steps"] for t in second["search"]["trials"]]
    for cost in later:
        assert math.isclose(cost, later[0], rel_tol=1e-3)
    loser = ({0.25, 0.9} - {winner}).pop()
    assert abs(later[0] - per_step[winner]) < 0.1 * abs(per_step[loser] - per_step[winner])


def test_search_none_refuses_parallel_trials():
    with pytest.raises(ConfigError) as caught:
        compose([*TINY, "search.parallel=2"])
    assert "search=none runs one trial per task" in str(caught.value) and "\n" not in str(caught.value)


def _summary(run_dir: Path) -> dict:
    summary = without_timing(json.loads((run_dir / "summary.json").read_text()))
    summary["search"].pop("parallel")  # the one setting the two runs differ in
    return summary


@pytest.mark.slow
def test_parallel_trials_give_the_same_trials_winner_and_flops_as_sequential_ones(reference, tmp_path):
    """search.parallel=2 on the 2 CPU cores: the same draws, dev errors, winner and FLOP counts (the
    whole results line and summary, wall-clock fields aside) as search.parallel=1."""
    proc = run_cli("run", *RUN, "search.parallel=2", f"out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    line, sequential = _line(tmp_path / "r"), _line(reference)
    assert len(line["search"]["trials"]) == 4 and "finished before the resume" not in proc.stdout
    assert without_timing(line) == without_timing(sequential)
    assert line["flops"]["search"] == sequential["flops"]["search"] > 0
    assert _summary(tmp_path / "r") == _summary(reference)
    assert not (tmp_path / "r" / "state").exists()


@pytest.mark.slow
def test_a_trial_that_fails_in_a_worker_is_reported_as_in_process(monkeypatch, tmp_path):
    """A plugin error in one trial is the same one-line PluginError; a NaN loss is the same failed
    trial in the results line."""
    base = [*TINY, "learner=broken", "stream.tasks=[faces]", "search=custom", "search.sampler=grid",
            "search.space.train.lr=choice(0.01,0.1)", "search.trials=2", "run_name=r"]
    register_learner(monkeypatch, "broken", "broken_plugins:FailsAtOneRate")
    messages = []
    for parallel in (1, 2):
        with pytest.raises(PluginError) as caught:
            run(compose([*base, f"search.parallel={parallel}", f"out_dir={tmp_path / f'plugin{parallel}'}"]))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("Learner 'broken' failed in begin_task(faces): RuntimeError('no rate that high') "
                                  "(raised at ") and "broken_plugins.py:" in messages[0]

    register_learner(monkeypatch, "broken", "broken_plugins:NanAtOneRate")
    lines = [_line(run(compose([*base, f"search.parallel={parallel}", f"out_dir={tmp_path / f'nan{parallel}'}"])))
             for parallel in (1, 2)]
    failed = [t for t in lines[1]["search"]["trials"] if t["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["overrides"]["train.lr"] == 0.1 and "the loss is nan" in failed[0]["error"]
    assert lines[1]["status"] == "ok" and lines[1]["search"]["winner"] != failed[0]["trial"]
    assert without_timing(lines[0]) == without_timing(lines[1])


PRUNE = [*TINY, "train.max_steps=50", "budget.flops_per_task=3e10", "budget.milestones=4", "budget.first_milestone=0.1",
         "train.checkpoint_every_n_steps=2", "stream.tasks=[faces]", "search=nevis_cheap",
         "search.pruner=successive_halving", "run_name=r"]


@pytest.mark.slow
def test_a_pruned_trial_stops_at_a_milestone_cannot_win_and_is_charged_to_search(tmp_path):
    """search.pruner=successive_halving: trials whose dev error at a milestone (a rung) is not in
    the best third of the trials so far stop there; what they spent is still charged to `search`;
    a run killed inside a trial that gets pruned resumes to the same decisions."""
    # every run of this test in a subprocess with one thread: float results are compared exactly
    whole = run_cli("run", *PRUNE, f"out_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    line = _line(tmp_path / "whole" / "r")
    trials, winner = line["search"]["trials"], line["search"]["winner"]
    full = trials[winner]["steps"]
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert len(pruned) >= 1, "the pruner stopped no trial"
    assert len(pruned) < len(trials), "every trial was pruned"
    assert trials[winner]["status"] == "ok"  # a trial that finished wins over every pruned one
    assert trials[0]["status"] == "ok"  # the first trial has no competitors at its rungs
    assert all(0 < t["steps"] < full and 0 < t["train_flops"] < trials[winner]["train_flops"] for t in pruned)
    finished = [t["dev_error"] for t in trials if t["status"] == "ok"]
    assert trials[winner]["dev_error"] == min(finished)
    assert line["flops"]["train"] == trials[winner]["train_flops"]
    losers = sum(t["train_flops"] for t in trials if t["trial"] != winner)
    assert math.isclose(line["flops"]["search"], losers, rel_tol=1e-12)
    assert losers < (len(trials) - 1) * trials[winner]["train_flops"]  # pruning saved compute

    # killed after the first milestone of a trial that is pruned at a later one, then resumed
    first = [t for t in trials if t["status"] == "pruned" and t["steps"] > 2]
    assert first, "the test needs a trial pruned after its first milestone"
    k, stop = first[0]["trial"], first[0]["steps"]
    killed = run_cli("run", *PRUNE, f"out_dir={tmp_path / 'killed'}", fault=f"step:{k}:{stop - 1}")
    assert killed.returncode == -signal.SIGKILL
    done = run_cli("run", f"resume={tmp_path / 'killed' / 'r'}")
    assert done.returncode == 0, done.stderr
    assert without_timing(_line(tmp_path / "killed" / "r")) == without_timing(line)


@pytest.mark.slow
def test_hyperband_prunes_the_same_trials_in_another_process(tmp_path):
    """Hyperband's brackets come from a hash of the study's name: fixed per task, so two processes
    prune the same trials, and the compute identity holds with its pruned trials too."""
    args = [*PRUNE, "search.pruner=hyperband", "train.checkpoint_every_n_steps=0"]
    first = run_cli("run", *args, f"out_dir={tmp_path / 'a'}")  # both in a subprocess with one thread
    assert first.returncode == 0, first.stderr
    line = _line(tmp_path / "a" / "r")
    trials, winner = line["search"]["trials"], line["search"]["winner"]
    assert any(t["status"] == "pruned" for t in trials) and trials[winner]["status"] == "ok"
    losers = sum(t["train_flops"] for t in trials if t["trial"] != winner)
    assert math.isclose(line["flops"]["search"], losers, rel_tol=1e-12)
    proc = run_cli("run", *args, f"out_dir={tmp_path / 'b'}")
    assert proc.returncode == 0, proc.stderr
    assert without_timing(_line(tmp_path / "b" / "r")) == without_timing(line)


@pytest.mark.parametrize("search", [
    ["search=nevis_cheap"],
    ["search=nevis"],
    ["search=custom", "search.space.train.lr=loguniform(1e-4,1e-1)", "search.space.train.momentum=choice(0.5,0.9)"],
])
def test_drawing_every_trial_up_front_gives_the_draws_of_ask_and_tell_in_turn(search, tmp_path):
    """search.parallel asks for all trials first: for the grid and random samplers those are the
    values that asking and telling one trial at a time draws, failed trials included."""
    from nevisbench.run.search.study import TaskSearch

    cfg = compose([*TINY, *search, "stream.tasks=[faces]"])
    results = [0.5, None, 0.25, 0.75] * 4  # a failed trial among them
    for index in (0, 3):
        in_turn = TaskSearch(cfg, index, tmp_path)
        drawn = []
        for k in range(in_turn.trials):
            drawn.append(in_turn.ask())
            in_turn.tell(results[k])
        up_front = TaskSearch(cfg, index, tmp_path)
        asked = [up_front.ask() for _ in range(up_front.trials)]
        for k in range(up_front.trials):
            up_front.tell(results[k])
        assert asked == drawn and len({repr(d) for d in drawn}) == len(drawn)


@pytest.mark.slow
def test_a_killed_worker_is_a_one_line_error_and_the_search_resumes_to_the_same_result(reference, tmp_path):
    """A worker SIGKILLed in the third trial (search.parallel=2): the run stops with a one-line
    error, keeps the finished trials, and a resume ends with the uninterrupted run's summary."""
    run_dir = tmp_path / "r"
    killed = run_cli("run", *RUN, "search.parallel=2", f"out_dir={tmp_path}", fault="trial:0:2")
    assert killed.returncode == 1 and "Traceback" not in killed.stderr
    assert "a search worker of task faces ended abruptly" in killed.stderr
    kept = sorted(p.name for p in (run_dir / "state" / "search_0").glob("trial_?.pt"))
    # the trials finished before the kill are kept; one still running in the other worker stops with the pool
    assert kept and "trial_2.pt" not in kept and not (run_dir / "results.jsonl").exists()
    done = run_cli("run", f"resume={run_dir}")
    assert done.returncode == 0, done.stderr
    assert "finished before the resume" in done.stdout
    assert _summary(run_dir) == _summary(reference)


@pytest.mark.slow
def test_a_resume_after_every_trial_finished_scores_the_saved_winner_without_retraining(tmp_path):
    # trial 1 is the best of the first two and wins: reading trial 0 back first must not delete its
    # weights, and (with a pruner) nothing may ask the pruner about a trial no longer in progress
    common = [*TINY, "stream.tasks=[faces]", "train.max_steps=9", "search=custom", "search.trials=3",
              "search.sampler=grid", "search.space.train.lr=choice(0.0001,0.01,0.3)", "search.pruner=successive_halving",
              "budget.milestones=3", "budget.first_milestone=0.2", "seed=1", f"out_dir={tmp_path}"]
    whole = run_cli("run", *common, "run_name=whole")
    assert whole.returncode == 0, whole.stderr
    line = _line(tmp_path / "whole")
    assert line["search"]["winner"] != 0  # the case this test is about
    killed = run_cli("run", *common, "run_name=killed", fault="write:results.jsonl")  # every trial done, line not written
    assert killed.returncode == -signal.SIGKILL
    done = run_cli("run", f"resume={tmp_path / 'killed'}")
    assert done.returncode == 0, done.stderr
    assert "3 of 3 trials finished before the resume" in done.stdout and "trained again" not in done.stdout
    assert without_timing(_line(tmp_path / "killed")) == without_timing(line)


def test_a_pruned_trial_never_beats_a_finished_one_but_wins_when_no_trial_finished():
    from nevisbench.compute.flops import FlopTally
    from nevisbench.run.task.trial import Trial

    def trial(k, dev_error, *, pruned=False, failure=None):
        return Trial(k=k, overrides={}, dev_error=dev_error, failure=failure, tally=FlopTally(), steps=1, anytime=[],
                     selected={}, budget=None, seconds=0.0, pruned=pruned)

    def winner(trials):
        best = None
        for t in trials:  # as the search does: in trial order, a later trial must beat the best so far
            best = t if t.beats(best) else best
        return best.k if best is not None else None

    failed, low_pruned, high_pruned, finished = (trial(0, None, failure="nan loss"), trial(1, 0.40, pruned=True),
                                                 trial(2, 0.45, pruned=True), trial(3, 0.60))
    assert winner([failed, low_pruned, high_pruned, finished]) == 3  # the only finished trial, though its error is higher
    assert winner([finished, low_pruned]) == 3
    assert winner([failed, high_pruned, low_pruned]) == 1  # all pruned or failed: the best pruned trial, not the failure
    assert winner([failed]) is None
