"""One trial of a task (`Trial`: its values, its selected model, its compute) and the records a
task's results line keeps of its trials (`search_record`) and of its budget (`budget_record`).
With search=none a task has exactly one trial, with no values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from nevisbench.compute.flops import FlopTally
from nevisbench.errors import DataError
from nevisbench.run.task.plan import TaskPlan

if TYPE_CHECKING:  # a trial is told which search it belongs to; the search room imports this one
    from nevisbench.run.search.study import TaskSearch

__all__ = ["Trial", "search_record", "budget_record"]


@dataclass
class Trial:
    """One trial of a task: its values, its selected model (None when read back on resume) and its
    compute. With search=none a task has exactly one trial, with no values."""

    k: int
    overrides: dict[str, Any]
    dev_error: float | None
    failure: str | None
    tally: FlopTally
    steps: int
    anytime: list[dict[str, float]]
    selected: dict[str, Any]
    budget: dict[str, Any] | None
    seconds: float
    cfg: Any = None
    learner: Any = None
    module: Any = None
    trainer: Any = None
    loaders: Any = None
    learner_state: Any = field(default=None, repr=False)
    resumed: bool = False  # read back from the run's state, not run in this process
    pruned: bool = False  # stopped at a milestone by the search's pruner: it cannot win

    def beats(self, other: Trial | None) -> bool:
        """A trial that trained without failing, ranked by (pruned, dev error): a pruned trial never
        beats one that finished, and wins only when every other trial was pruned or failed (so a
        pruner cannot fail a task whose trials trained fine). Ties: the earlier trial wins."""
        if self.failure is not None or self.dev_error is None:
            return False
        if other is None or other.failure is not None or other.dev_error is None:
            return True
        return (self.pruned, self.dev_error) < (other.pruned, other.dev_error)

    def release(self) -> None:
        self.module = self.trainer = self.loaders = self.learner = None

    def record(self, *, with_learner: bool) -> dict[str, Any]:
        """What the run's state keeps of a finished trial (the learner's state only for a best so far)."""
        return {"k": self.k, "overrides": dict(self.overrides), "dev_error": self.dev_error, "failure": self.failure,
                "tally": asdict(self.tally), "steps": self.steps, "anytime": self.anytime, "selected": self.selected,
                "budget": self.budget, "seconds": self.seconds, "pruned": self.pruned,
                "learner": self.learner.state_dict() if with_learner else None}

    def weights(self) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    @staticmethod
    def restored(record: dict[str, Any] | None, overrides: dict[str, Any], search: TaskSearch, k: int) -> Trial | None:
        """A trial finished before a resume, from its record; None when it has none."""
        if record is None:
            return None
        if record["overrides"] != overrides:
            raise DataError(f"Cannot resume: the search record {search.record_path(k)} holds other values "
                            f"({record['overrides']}) than the sampler draws now ({overrides})")
        return Trial(k=k, overrides=overrides, dev_error=record["dev_error"], failure=record["failure"],
                     tally=FlopTally(**record["tally"]), steps=record["steps"], anytime=record["anytime"],
                     selected=record["selected"], budget=record["budget"], seconds=record["seconds"],
                     learner_state=record["learner"], pruned=record.get("pruned", False), resumed=True)


def search_record(cfg: DictConfig, trials: list[Trial], winner: Trial) -> dict[str, Any]:
    """The `search` object of a task's results line: every trial and the winner."""
    measure = cfg.budget.measure
    return {
        "name": cfg.search.name, "sampler": cfg.search.sampler,
        "trials": [{"trial": t.k, "overrides": t.overrides, "dev_error": t.dev_error,
                    "status": "failed" if t.failure is not None else "pruned" if t.pruned else "ok", "error": t.failure, "steps": t.steps,
                    "train_flops": t.tally.measure(measure, "train"), "eval_flops": t.tally.measure(measure, "eval"),
                    "flops": {"train": t.tally.train, "eval": t.tally.eval,
                              "executed_train": t.tally.executed_train, "executed_eval": t.tally.executed_eval},
                    "seconds": t.tally.seconds_train + t.tally.seconds_eval} for t in trials],
        "winner": winner.k,
        "winner_overrides": winner.overrides,
    }


def budget_record(plan: TaskPlan, tally: FlopTally) -> dict[str, Any] | None:
    """The `budget` object of a task's results line: the FLOP budget and what the training spent of it
    (None without a budget)."""
    if plan.budget is None:
        return None
    spent = tally.measure(plan.measure, "train")
    return {"flops_per_task": plan.budget, "measure": plan.measure, "spent": spent, "ratio": spent / plan.budget}
