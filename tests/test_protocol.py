"""protocol=nevis|fast: Nevis' crop with its central-crop fallback, flips for every task, best-dev
model selection; the short streams default to nevis, the demo to fast."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nevisbench.config import compose
from nevisbench.run.runner import run
from nevisbench.tasks.loader import BatchLoader, Split


@pytest.mark.parametrize("stream", ["short", "short_objects", "short_ood", "short_heldout"])
def test_short_streams_default_to_the_nevis_protocol_and_the_command_line_wins(stream):
    cfg = compose([f"stream={stream}"])
    assert cfg.choices.protocol == "nevis" and cfg.protocol.selection == "best_dev" and cfg.protocol.flip == "all"
    assert cfg.data.min_crop_scale == 0.08
    assert compose([f"stream={stream}", "protocol=fast"]).protocol.selection == "last"
    assert compose([f"stream={stream}", "data.min_crop_scale=0.2"]).data.min_crop_scale == 0.2


def test_the_demo_defaults_to_the_fast_protocol():
    cfg = compose([])
    assert cfg.choices.protocol == "fast" and cfg.protocol.selection == "last" and cfg.data.min_crop_scale == 0.35


def _loader(fallback: str) -> BatchLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    # every crop has the full area; any aspect ratio but 1 makes one side longer than the image
    return BatchLoader(Split(images, torch.arange(64)),  # labels: the image index (batches are shuffled)
                       batch_size=64, image_size=16, train=True,
                       hflip=False, min_crop_scale=1.0, crop_fallback=fallback, seed=0)


def test_a_crop_that_does_not_fit_falls_back_to_the_whole_image_under_nevis():
    centre, clamped = _loader("center"), _loader("clamp")
    x_centre, index = next(iter(centre))
    x_clamped, index_clamped = next(iter(clamped))
    assert torch.equal(index, index_clamped)
    whole = (centre.images[index].float() - centre.mean) / centre.std
    assert torch.allclose(x_centre, whole, atol=1e-3)  # the whole image, unchanged
    assert not torch.allclose(x_clamped, whole, atol=1e-3)  # clamp keeps a thinner crop and stretches it
    assert F.mse_loss(x_clamped, whole) > 0.01


def test_nevis_flips_every_task_and_fast_keeps_ocr_unflipped(tiny):
    from nevisbench.run.task.lightning import make_loaders
    from nevisbench.tasks import get_stream

    digits = get_stream("demo").select(["digits"]).tasks[0].load(image_size=16, seed=0)
    assert digits.hflip is False  # an OCR task
    for protocol, flips in (("nevis", True), ("fast", False)):
        loaders = make_loaders(digits, compose([*tiny, f"protocol={protocol}"]), torch.device("cpu"), 0)
        assert loaders["train"].hflip is flips
        assert set(loaders) == {"train", "dev", "dev_test", "test"}


@pytest.mark.slow
def test_nevis_scores_the_best_dev_model(tmp_path, tiny):
    common = [*tiny, "stream.tasks=[digits]", "train.max_steps=6", "budget.milestones=4", f"out_dir={tmp_path}"]
    nevis = run(compose([*common, "protocol=nevis", "protocol.validate_every_n_steps=2", "run_name=nevis"]))
    (line,) = [json.loads(t) for t in (nevis / "results.jsonl").read_text().splitlines()]
    selected = line["selected"]
    assert selected["rule"] == "best_dev"
    # validated as dm_nevis: after steps 0, 2, 4 (0-based; 1, 3, 5 done) and after the last; not at the milestones
    steps, errors = zip(*selected["validations"], strict=False)
    assert steps == (1, 3, 5, 6)
    assert selected["dev_error"] == min(errors)
    assert selected["step"] == steps[errors.index(min(errors))]  # ties: the earlier model
    assert line["dev_error"] == errors[-1] == line["anytime"][-1]["dev_error"]  # the last validation: the trial's cost
    assert line["dev_test_error"] is not None and line["test_error"] is not None
    fast = run(compose([*common, "protocol=fast", "run_name=fast"]))
    (last,) = [json.loads(t) for t in (fast / "results.jsonl").read_text().splitlines()]
    assert last["selected"] == {"rule": "last"}
