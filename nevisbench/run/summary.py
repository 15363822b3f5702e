"""`summary.json`: the stream-level scores of a run, built from its results lines."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from nevisbench.run.scores import stream_scores

__all__ = ["summarize"]


def summarize(cfg: DictConfig, run_name: str, all_results: list[dict[str, Any]], meter_total: dict[str, Any],
              skipped: list[dict[str, str]] | None = None, backbone: dict[str, Any] | None = None) -> dict[str, Any]:
    results = [r for r in all_results if r["status"] == "ok"]
    errors = [r["test_error"] for r in results]
    scores = stream_scores(results, auc_min_flops=cfg.budget.auc_min_flops, auc_max_flops=cfg.budget.auc_max_flops,
                           scenario=cfg.scenario, count_search=bool(cfg.budget.get("count_search", True)))
    by_domain: dict[str, list[float]] = {}
    for r in results:
        by_domain.setdefault(r["domain"], []).append(r["test_error"])
    return {
        "run_name": run_name,
        "learner": cfg.choices.learner,
        "learner_config": OmegaConf.to_container(cfg.learner, resolve=True),
        "stream": cfg.stream.name,
        "scenario": cfg.scenario,
        "seed": cfg.seed,
        "backbone": backbone or {"name": cfg.backbone.name},  # {name, arch, params, source}: what ran
        "num_tasks": len(results),
        "mean_test_error": sum(errors) / len(errors) if errors else None,
        "mean_test_error_by_domain": {d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
        "total_flops": meter_total["total"],
        "flops": meter_total,
        "wall_seconds": sum(r["wall_seconds"] for r in results),
        "budget": OmegaConf.to_container(cfg.budget, resolve=True),
        "search": OmegaConf.to_container(cfg.search, resolve=True) if cfg.get("search") is not None else None,
        **scores,
        "failed_tasks": [r["task"] for r in all_results if r["status"] != "ok"],
        "skipped_tasks": list(skipped or []),  # not prepared under data.root (stream.allow_missing=true)
        "tasks": all_results,
    }
