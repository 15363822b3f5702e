"""Forward transfer (`nevisbench.run.store.forward_transfer`): a task scored before it is trained,
with the backbone it starts from against the run's prepared backbone, through the metric interface."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY
from omegaconf import OmegaConf
from torch import nn

from nevisbench.analysis.compare import compare_rows, to_markdown
from nevisbench.analysis.runs import read_run
from nevisbench.api.types import TaskInfo
from nevisbench.compute.flops import FlopMeter
from nevisbench.config import compose
from nevisbench.run.runner import run
from nevisbench.run.store.forward_transfer import ForwardTransfer
from nevisbench.run.store.metric import TaskProbe, score_lines
from nevisbench.run.store.metrics import METRICS
from nevisbench.run.task.evaluation import evaluate
from nevisbench.tasks.loader import BatchLoader, Split, TaskData

COLOURS = 3  # class c: images of colour channel c, with a little noise


def _split(per_class: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(COLOURS).repeat_interleave(per_class)
    images = torch.randint(0, 40, (len(labels), 3, 8, 8), dtype=torch.uint8, generator=generator)
    for i, label in enumerate(labels):
        images[i, label] += 200
    return Split(images, labels)


def _backbone(sees_colour: bool) -> nn.Module:
    """Channel means (they tell the classes apart) or a constant (it cannot)."""
    linear = nn.Linear(3, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(3) if sees_colour else torch.zeros(3, 3))
        linear.bias.copy_(torch.zeros(3) if sees_colour else torch.ones(3))
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def _probe(index: int, start: nn.Module, initial: nn.Module, meter: FlopMeter) -> TaskProbe:
    data = TaskData(key="colours", num_classes=COLOURS, train=_split(10, 0), dev=_split(2, 1), test=_split(6, 2))
    task = TaskInfo(key="colours", name="colours", index=index, domain="object", num_classes=COLOURS)
    cfg = OmegaConf.create({"data": {"eval_batch_size": 7, "image_size": 8}})

    def scored(model: nn.Module, split: str) -> float:
        loader = BatchLoader(getattr(data, split), batch_size=7, image_size=8, train=False)
        return evaluate(model, loader, meter, num_classes=COLOURS)

    return TaskProbe(cfg=cfg, task=task, data=data, start=start, initial=initial, device=torch.device("cpu"),
                     evaluate=scored)


def test_a_backbone_that_separates_the_task_before_training_transfers_forward():
    meter = FlopMeter()
    meter.start_task()
    start, initial = _backbone(sees_colour=True), _backbone(sees_colour=False)
    kept = {k: v.clone() for k, v in start.state_dict().items()}
    measured = ForwardTransfer().measure(_probe(1, start, initial, meter))
    assert measured is not None
    assert measured["error"] == pytest.approx(0.0)  # the class means of its features classify every test image
    assert measured["reference_error"] == pytest.approx(1 - 1 / COLOURS)  # one feature for all: one class for all
    assert measured["forward_transfer"] == pytest.approx(1 - 1 / COLOURS)
    assert meter.task.eval > 0  # both passes over train and test are charged as evaluation
    assert all(torch.equal(v, kept[k]) for k, v in start.state_dict().items())  # measured on a copy
    # the other way round, the earlier tasks made the features worse
    worse = ForwardTransfer().measure(_probe(1, initial, start, meter))
    assert worse is not None and worse["forward_transfer"] == pytest.approx(-(1 - 1 / COLOURS))
    assert ForwardTransfer().measure(_probe(0, start, initial, meter)) is None  # task 0 starts from the prepared one


def test_the_summary_section_is_the_mean_over_the_measured_tasks():
    lines = [{"task": "a"}, {"task": "b", "forward_transfer": {"error": 0.2, "reference_error": 0.5, "forward_transfer": 0.3}},
             {"task": "c", "forward_transfer": {"error": 0.6, "reference_error": 0.5, "forward_transfer": -0.1}},
             {"task": "d", "forward_transfer": {"skipped": "the backbone's outputs are not finite"}}]
    section = score_lines([ForwardTransfer()], lines)["forward_transfer"]
    assert section == {"tasks": ["b", "c"], "error": [0.2, 0.6], "reference_error": [0.5, 0.5],
                       "mean": pytest.approx(0.1)}
    assert score_lines([ForwardTransfer()], lines[:1]) == {}


def test_it_is_registered_and_measures_only_continual_runs_that_revisit():
    assert any(isinstance(metric, ForwardTransfer) for metric in METRICS)
    metric = ForwardTransfer()
    assert metric.enabled(compose(["scenario=continual", "eval.revisit=true"]))
    assert not metric.enabled(compose(["scenario=continual"]))
    assert not metric.enabled(compose(["scenario=transfer"]))


@pytest.mark.slow
def test_a_revisiting_continual_run_reports_forward_transfer_and_compare_shows_it(tmp_path):
    stream = [*TINY, "stream.tasks=[digits,faces,shapes]", "scenario=continual", "budget.milestones=0", "run_name=r",
              f"out_dir={tmp_path}", "eval.revisit=true"]
    run_dir = run(compose(stream))
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    section = json.loads((run_dir / "summary.json").read_text())["forward_transfer"]
    assert "forward_transfer" not in lines[0] and section["tasks"] == ["faces", "shapes"]
    for line in lines[1:]:
        measured = line["forward_transfer"]
        assert measured["forward_transfer"] == pytest.approx(measured["reference_error"] - measured["error"])
        assert 0 < measured["flops"] < line["flops"]["eval"]
    assert section["mean"] == pytest.approx(sum(line["forward_transfer"]["forward_transfer"] for line in lines[1:]) / 2)
    assert read_run(run_dir).metrics["forward_transfer/mean"] == pytest.approx(section["mean"])
    assert "forward_transfer/mean (mean)" in to_markdown(compare_rows([read_run(run_dir)]))
