"""The batch loader: shapes, normalisation, reproducible shuffling, batched augmentation."""

from __future__ import annotations

import torch

from nevisbench.tasks.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, Split, split_indices


def _split(n: int = 10, size: int = 8, channels: int = 1) -> Split:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    return Split(images, torch.arange(n))


def test_eval_loader_keeps_order_and_every_sample():
    loader = BatchLoader(_split(10), batch_size=4, image_size=8, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    x, _ = batches[0]
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    # grey 0 normalised with ImageNet statistics, per channel
    expected = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=False)])
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-5)


def test_train_loader_drops_the_last_partial_batch_and_reshuffles_each_epoch_reproducibly():
    loader = BatchLoader(_split(10), batch_size=4, image_size=8, train=True, augment=False, seed=1)
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert len(loader) == 2 and first.numel() == 8
    assert not torch.equal(first, second)
    again = BatchLoader(_split(10), batch_size=4, image_size=8, train=True, augment=False, seed=1)
    assert torch.equal(torch.cat([y for _, y in again]), first)


def test_augmentation_outputs_the_configured_size_and_varies_per_sample():
    images = torch.randint(0, 255, (6, 3, 20, 20), dtype=torch.uint8)
    images[:] = images[0]  # six copies of one image
    loader = BatchLoader(Split(images, torch.zeros(6, dtype=torch.long)), batch_size=6, image_size=12, train=True, augment=True, seed=0)
    x, _ = next(iter(loader))
    assert x.shape == (6, 3, 12, 12)
    # identical inputs, different random crops/flips
    assert len({tuple(v.flatten()[:20].tolist()) for v in x}) > 1


def test_eval_resizes_without_augmenting():
    loader = BatchLoader(_split(4, size=20, channels=3), batch_size=4, image_size=10, train=True, augment=False)
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 10, 10)
    assert torch.allclose(x.amax(dim=(2, 3)), x.amin(dim=(2, 3)))  # flat images stay flat


def test_split_indices_are_disjoint_complete_and_seeded():
    parts = split_indices(100, {"train": 0.56, "dev": 0.12, "test": 0.32}, seed=0)
    joined = sorted(i for p in parts.values() for i in p.tolist())
    assert joined == list(range(100))
    assert [len(p) for p in parts.values()] == [56, 12, 32]
    assert split_indices(100, {"a": 0.5, "b": 0.5}, seed=0)["a"].tolist() != split_indices(100, {"a": 0.5, "b": 0.5}, seed=1)["a"].tolist()
