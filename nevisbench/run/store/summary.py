"""`summary.json` as a type, `Summary`: the stream-level scores of a run, built from its results
lines (and, when a finished run lost its summary, the stream's FLOP tally too: `stream_tally`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nevisbench.compute.flops import FlopTally
from nevisbench.errors import DataError
from nevisbench.run.store.provenance import provenance
from nevisbench.run.store.scores import Scores, stream_scores

__all__ = ["SUMMARY_KEYS", "Summary", "summarize", "stream_tally"]


@dataclass
class Summary:
    """A run's `summary.json` (written by `to_dict`, and only there): who ran what, the stream's
    totals, its `Scores` (spread at the top level, as the file has always had them), every task's
    line, and the metrics' sections (`nevisbench.run.store.metric`: `continual`, `forward_transfer`)."""

    run_name: str
    learner: str
    learner_config: dict[str, Any]
    stream: str
    scenario: str
    seed: int
    backbone: dict[str, Any]  # {name, arch, params, source}: what ran
    provenance: dict[str, Any]  # nevisbench version and commit, Python, torch, Lightning, device (run/store/provenance.py)
    num_tasks: int  # the tasks that finished
    mean_test_error: float | None
    mean_test_error_by_domain: dict[str, float]
    total_flops: float
    flops: dict[str, Any]  # the stream's FLOP tally
    wall_seconds: float
    budget: dict[str, Any]
    search: dict[str, Any] | None
    scores: Scores
    failed_tasks: list[str]
    skipped_tasks: list[dict[str, str]]  # not prepared under data.root (stream.allow_missing=true)
    tasks: list[dict[str, Any]]  # every task's results line, failed ones too
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # by metric name

    def to_dict(self) -> dict[str, Any]:
        head = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {key: head[key] for key in list(head)[:list(head).index("scores")]}
        out |= self.scores.to_dict()
        out |= {key: head[key] for key in ("failed_tasks", "skipped_tasks", "tasks")}
        return out | self.sections


SUMMARY_KEYS = frozenset(f.name for f in fields(Summary) if f.name not in ("scores", "sections")) | frozenset(
    f.name for f in fields(Scores) if f.name not in ("num_tasks", "anytime"))
"""The keys every summary has, in every scenario (the anytime curve and its AUC: transfer only)."""


def summarize(cfg: DictConfig, run_name: str, all_results: list[dict[str, Any]], meter_total: dict[str, Any],
              skipped: list[dict[str, str]] | None = None, backbone: dict[str, Any] | None = None,
              meter_engine: str | None = None) -> Summary:
    results = [r for r in all_results if r["status"] == "ok"]
    errors = [r["test_error"] for r in results]
    by_domain: dict[str, list[float]] = {}
    for r in results:
        by_domain.setdefault(r["domain"], []).append(r["test_error"])
    return Summary(
        run_name=run_name, learner=cfg.choices.learner,
        learner_config=cast(dict, OmegaConf.to_container(cfg.learner, resolve=True)), stream=cfg.stream.name,
        scenario=cfg.scenario, seed=cfg.seed, backbone=backbone or {"name": cfg.backbone.name}, num_tasks=len(results),
        provenance={**provenance(cfg.trainer.get("accelerator"), cfg.trainer.get("devices")), "meter_engine": meter_engine},
        mean_test_error=sum(errors) / len(errors) if errors else None,
        mean_test_error_by_domain={d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
        total_flops=meter_total["total"], flops=meter_total, wall_seconds=sum(r["wall_seconds"] for r in results),
        budget=cast(dict, OmegaConf.to_container(cfg.budget, resolve=True)),
        search=cast(dict, OmegaConf.to_container(cfg.search, resolve=True)) if cfg.get("search") is not None else None,
        scores=stream_scores(results, auc_min_flops=cfg.budget.auc_min_flops, auc_max_flops=cfg.budget.auc_max_flops,
                             scenario=cfg.scenario, x=cfg.budget.x),
        failed_tasks=[r["task"] for r in all_results if r["status"] != "ok"], skipped_tasks=list(skipped or []),
        tasks=all_results)


def stream_tally(results: list[dict[str, Any]], source: object) -> FlopTally:
    """The stream's FLOP tally rebuilt from its committed lines (read from `source`): each line's
    `flops` is its task's tally, and the meter sums the tasks' tallies in order exactly so, so the
    sum is the one an uninterrupted run summarises, to the last bit."""
    total = FlopTally()
    for number, line in enumerate(results, start=1):
        try:
            flops, executed, seconds = line["flops"], line["flops"]["executed"], line["flops"]["seconds"]
            task = FlopTally(
                train_forward=flops["train_forward"], train_backward=flops["train_backward"], eval=flops["eval"],
                search=flops["search"], executed_train_forward=executed["train_forward"],
                executed_train_backward=executed["train_backward"], executed_eval=executed["eval"],
                executed_search=executed["search"], seconds_train=seconds["train"], seconds_eval=seconds["eval"],
                seconds_search=seconds["search"])
            total.add(task)
        except (KeyError, TypeError) as exc:
            raise DataError(f"{source}: line {number} has no complete `flops` object ({exc!r}); the summary cannot "
                            "be rebuilt from it") from None
    return total
