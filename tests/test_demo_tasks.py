"""The demo stream's data: shapes, classes, disjoint deterministic splits."""

from __future__ import annotations

import pytest
import torch

from nevisbench.errors import DataError
from nevisbench.tasks import get_stream
from nevisbench.tasks.loader import Split, TaskData

STREAM = get_stream("demo")
EXPECTED = {"digits": ("ocr", 10, 1797), "textures": ("texture", 4, 256), "faces": ("face", 2, 200), "shapes": ("object", 5, 600)}


def _content_hashes(split: Split) -> set[int]:
    return {hash(img.numpy().tobytes()) for img in split.images}


def test_stream_has_four_tasks_in_different_domains():
    assert [t.key for t in STREAM.tasks] == ["digits", "textures", "faces", "shapes"]
    assert len({t.domain for t in STREAM.tasks}) == 4


@pytest.mark.parametrize("spec", STREAM.tasks, ids=lambda s: s.key)
def test_task_data_shapes_labels_and_splits(spec):
    domain, num_classes, total = EXPECTED[spec.key]
    data = spec.load(image_size=24, seed=0)
    data.validate()
    assert spec.domain == domain and data.num_classes == spec.num_classes == num_classes
    sizes = {name: len(getattr(data, name)) for name in ("train", "dev", "dev_test", "test")}
    assert sum(sizes.values()) == total
    assert sizes["train"] == round(0.56 * total) and sizes["dev"] == round(0.12 * total)
    assert sizes["dev_test"] == round(0.10 * total)
    for name in ("train", "dev", "dev_test", "test"):
        split = getattr(data, name)
        assert split.images.dtype == torch.uint8 and split.images.shape[-2:] == (24, 24)
        assert split.images.shape[1] in (1, 3)
    # every class appears in training
    assert set(data.train.labels.tolist()) == set(range(num_classes))
    # the splits are disjoint (textures are non-overlapping patches; shapes are random draws)
    if spec.key in ("textures", "shapes", "faces"):
        train, test = _content_hashes(data.train), _content_hashes(data.test)
        assert not train & test


@pytest.mark.parametrize("spec", STREAM.tasks, ids=lambda s: s.key)
def test_task_data_is_deterministic_in_the_seed(spec):
    a, b, c = (spec.load(image_size=16, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.labels, c.train.labels) or not torch.equal(a.train.images, c.train.images)


def test_digits_are_not_flipped_during_augmentation():
    data = STREAM.tasks[0].load(image_size=16, seed=0)
    assert data.hflip is False


def _bad(**changes) -> TaskData:
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    good = Split(images, torch.tensor([0, 1, 0, 1]))
    fields = {"key": "toy", "num_classes": 2, "train": good, "dev": good, "test": good}
    fields.update(changes)
    return TaskData(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test": Split(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 2]))}, "label 2 is out of range 0..1"),
        ({"dev": Split(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))}, "images must be uint8"),
        ({"train": Split(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))}, "the split is empty"),
        ({"train": Split(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))}, "3 images but labels of shape (2,)"),
    ],
)
def test_malformed_task_data_is_refused_naming_task_and_split(changes, message):
    with pytest.raises(DataError) as info:
        _bad(**changes).validate()
    assert "task 'toy'" in str(info.value) and message in str(info.value)
