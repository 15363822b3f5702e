"""Stream scores: curve over matching milestones, AUC over a fixed log range, sub-streams."""

from __future__ import annotations

import pytest

from nevisbench.run.store.scores import anytime_curve, auc_range, chance_error, curve_auc, run_point, stream_scores
from nevisbench.run.task.callbacks import milestone_fractions


def _point(flops: float, error: float) -> dict[str, float]:
    return {"flops": flops, "mean_error": error, "flops_executed": flops, "seconds": 0.0}


def test_auc_of_a_hand_made_curve():
    # log10 range [0, 4], but the run ends at 1e3: the AUC covers [0, 3], nothing held flat after it.
    # Error is chance on [0, 1) (no model yet), then 0.6 -> 0.2 linearly on [1, 3]
    curve = [_point(10, 0.6), _point(1000, 0.2)]
    assert curve_auc(curve, 1, 1e4) == pytest.approx((1 * 1.0 + 2 * (0.6 + 0.2) / 2) / 3)
    assert curve_auc(curve, 1, 1e4, chance=0.9) == pytest.approx((1 * 0.9 + 2 * (0.6 + 0.2) / 2) / 3)
    assert auc_range(curve, 1, 1e4) == [1, 1000]


def test_auc_clips_the_curve_to_the_range():
    curve = [_point(1, 0.8), _point(100, 0.4), _point(1e6, 0.4)]
    # range [10, 1000]: interpolated 0.6 at 10 -> 0.4 at 100, then 0.4
    assert curve_auc(curve, 10, 1000) == pytest.approx(((0.6 + 0.4) / 2 + 0.4) / 2)
    assert auc_range(curve, 10, 1000) == [10, 1000]
    assert curve_auc([], 1, 10) is None
    assert curve_auc([_point(1, 0.5)], 10, 100) is None  # the run ended before the range starts


def test_chance_is_one_minus_one_over_classes_and_one_for_multi_label():
    tasks = [{"num_classes": 10, "metric": "top1_error"}, {"num_classes": 2, "metric": "top1_error"},
             {"num_classes": 5, "metric": "1-mAP"}]
    assert chance_error(tasks) == pytest.approx((0.9 + 0.5 + 1.0) / 3)
    scores = stream_scores([{**_task("ocr", [0.4], [100], 0.3), "num_classes": 4, "metric": "top1_error"}],
                           auc_min_flops=10, auc_max_flops=1e4)
    assert scores.anytime is not None
    assert scores.anytime.auc == pytest.approx((1 * 0.75 + 0) / 1)  # chance 0.75 on [10, 100], where the run ends
    assert scores.anytime.auc_range == [10, 100]


def test_milestones_at_the_same_compute_are_merged():
    tasks = [_task("object", [0.9, 0.5, 0.3], [1, 1, 100], 0.25), _task("ocr", [0.7, 0.3, 0.1], [2, 2, 200], 0.05)]
    curve = anytime_curve(tasks)
    assert [p["flops"] for p in curve] == [3, 300]
    assert [p["mean_error"] for p in curve] == pytest.approx([(0.8 + 0.4) / 2, 0.2])


def _task(domain: str, errors: list[float], flops: list[float], test_error: float) -> dict:
    return {
        "domain": domain,
        "test_error": test_error,
        "anytime": [
            {"train_flops": f, "train_flops_executed": 2 * f, "train_seconds": 1.0, "dev_error": e}
            for f, e in zip(flops, errors, strict=False)
        ],
    }


def test_anytime_curve_means_errors_and_sums_flops_at_matching_milestones():
    tasks = [_task("object", [0.9, 0.5, 0.3], [1, 10, 100], 0.25), _task("ocr", [0.7, 0.3, 0.1], [2, 20, 200], 0.05)]
    curve = anytime_curve(tasks)
    assert [p["flops"] for p in curve] == [3, 30, 300]
    assert [p["flops_executed"] for p in curve] == [6, 60, 600]
    assert [p["mean_error"] for p in curve] == pytest.approx([0.8, 0.4, 0.2])
    scores = stream_scores(tasks, auc_min_flops=1, auc_max_flops=1000)
    assert scores.final_mean_error == pytest.approx(0.15)
    written = scores.to_dict()  # as summary.json has them
    assert set(written["sub_streams"]) == {"objects", "ood"}
    assert written["sub_streams"]["objects"]["anytime_curve"][0]["flops"] == 1
    assert written["sub_streams"]["ood"]["final_mean_error"] == pytest.approx(0.05)


def test_no_sub_streams_when_every_task_shares_a_group():
    tasks = [_task("ocr", [0.5], [1], 0.5), _task("face", [0.5], [1], 0.5)]
    assert stream_scores(tasks, auc_min_flops=1, auc_max_flops=10).sub_streams == {}


def test_milestones_are_log_spaced_and_end_at_the_full_budget():
    fractions = milestone_fractions(8, 0.01)
    assert len(fractions) == 8 and fractions[0] == pytest.approx(0.01) and fractions[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(fractions, fractions[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * 7)
    assert milestone_fractions(1, 0.01) == [1.0]


def _finished(domain: str, metric: str, test_error: float, train: float, search: float = 0.0, dev_test: float | None = 0.5) -> dict:
    return {
        "domain": domain,
        "metric": metric,
        "test_error": test_error,
        "dev_test_error": dev_test,
        "anytime": [{"train_flops": train, "train_flops_executed": train, "train_seconds": 1.0, "dev_error": 0.5}],
        "flops": {
            "train": train,
            "search": search,
            "eval": 7.0,
            "executed": {"train": 2 * train, "search": 0.0, "eval": 14.0},
            "seconds": {"train": 1.0, "search": 0.0, "eval": 0.5},
        },
    }


def test_a_run_is_one_point_train_plus_search_compute_against_final_error():
    tasks = [_finished("object", "top1_error", 0.2, 100.0, search=50.0), _finished("ocr", "top1_error", 0.4, 300.0)]
    point = stream_scores(tasks, auc_min_flops=1, auc_max_flops=1e3).to_dict()["point"]
    assert point["flops"] == 450.0 and point["flops_executed"] == 800.0 and point["seconds"] == 2.0
    assert point["error"] == pytest.approx(0.3)


@pytest.mark.parametrize(("x", "flops", "executed", "seconds"), [
    ("train+search", 450.0, 800.0, 2.0),
    ("train", 400.0, 800.0, 2.0),
    ("train+eval", 414.0, 828.0, 3.0),  # each task's 7 evaluation FLOPs (14 executed, 0.5 s) on the axis
    ("train+search+eval", 464.0, 828.0, 3.0),
])
def test_budget_x_names_the_compute_kinds_the_point_sums(x, flops, executed, seconds):
    tasks = [_finished("object", "top1_error", 0.2, 100.0, search=50.0), _finished("ocr", "top1_error", 0.4, 300.0)]
    scores = stream_scores(tasks, auc_min_flops=1, auc_max_flops=1e3, x=x).to_dict()
    point = scores["point"]
    assert (point["flops"], point["flops_executed"], point["seconds"]) == (flops, executed, seconds)
    assert point["x"] == x and point["includes_search"] == ("search" in x)
    assert scores["point_without_search"]["flops"] == 400.0  # training only, whatever the axis
    assert scores["sub_streams"]["objects"]["point"]["x"] == x


@pytest.mark.parametrize("bad", ["eval", "search+train", "train+flops", "", "TRAIN"])
def test_an_unknown_budget_x_names_the_valid_axes(bad):
    with pytest.raises(ValueError, match=r"budget.x=.* is not a compute axis; valid: train\+search, train, train\+eval"):
        run_point([_finished("object", "top1_error", 0.2, 1.0)], 0.2, x=bad)


def test_single_and_multi_label_means_are_reported_apart_and_combined():
    tasks = [
        _finished("object", "top1_error", 0.2, 1.0),
        _finished("object", "1-mAP", 0.6, 1.0),
        _finished("scene", "top1_error", 0.4, 1.0, dev_test=0.1),
    ]
    scores = stream_scores(tasks, auc_min_flops=1, auc_max_flops=10).to_dict()
    assert scores["final_mean_top1_error"] == pytest.approx(0.3)
    assert scores["final_mean_map_error"] == pytest.approx(0.6)
    assert scores["final_mean_error"] == pytest.approx(0.4)
    assert scores["dev_test_mean_error"] == pytest.approx((0.5 + 0.5 + 0.1) / 3)
    assert scores["sub_streams"]["objects"]["final_mean_map_error"] == pytest.approx(0.6)
    assert scores["sub_streams"]["ood"]["final_mean_map_error"] is None


def test_continual_runs_get_no_averaged_anytime_curve_and_no_auc():
    tasks = [_finished("object", "top1_error", 0.2, 1.0), _finished("ocr", "top1_error", 0.4, 1.0)]
    scores = stream_scores(tasks, auc_min_flops=1, auc_max_flops=10, scenario="continual").to_dict()
    assert "auc" not in scores and "anytime_curve" not in scores and "auc_range" not in scores
    assert all("auc" not in group for group in scores["sub_streams"].values())
    assert scores["point"]["error"] == pytest.approx(0.3)


def test_a_real_run_puts_the_compute_budget_x_names_on_its_point(tmp_path):
    """A tiny real run with `budget.x=train+eval`: its point's x is every task's training plus
    evaluation compute (the dev evaluations best-dev selection spends), in each measure."""
    import json

    from conftest import TINY

    from nevisbench.config import compose
    from nevisbench.run.runner import run

    folder = run(compose([*TINY, "stream.tasks=[faces,digits]", "budget.x=train+eval", "run_name=r", f"out_dir={tmp_path}"]))
    summary = json.loads((folder / "summary.json").read_text())
    lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    point = summary["point"]
    assert point["x"] == "train+eval" and summary["budget"]["x"] == "train+eval"
    assert point["flops"] == pytest.approx(sum(t["flops"]["train"] + t["flops"]["eval"] for t in lines), rel=1e-12)
    assert point["flops_executed"] == pytest.approx(
        sum(t["flops"]["executed"]["train"] + t["flops"]["executed"]["eval"] for t in lines), rel=1e-12)
    assert all(t["flops"]["eval"] > 0 for t in lines)
    assert summary["point_without_search"]["flops"] == pytest.approx(sum(t["flops"]["train"] for t in lines), rel=1e-12)
