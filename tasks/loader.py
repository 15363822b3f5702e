"""Task data held as uint8 tensors, and a loader that builds batches on the compute device.

Augmentation (the Nevis protocol's random resized crop + horizontal flip) is applied to a whole
batch at once with one `affine_grid`/`grid_sample`, never per image in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nevisbench.errors import DataError

__all__ = ["Split", "TaskData", "BatchLoader", "split_indices", "IMAGENET_MEAN", "IMAGENET_STD"]

# Normalisation of torchvision's ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "dev", "dev_test", "test")


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W), C in {1, 3}
    labels: torch.Tensor  # int64 (N,) class ids, or uint8 (N, num_classes) multi-hot

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class TaskData:
    """The train/dev/dev_test/test splits of one task (dev_test is optional)."""

    key: str
    num_classes: int
    train: Split
    dev: Split
    test: Split
    hflip: bool = True  # mirror images during augmentation (off for OCR, where it changes meaning)
    multi_label: bool = False  # labels are multi-hot (N, num_classes); scored by mean average precision
    dev_test: Split | None = None  # Nevis' dev-test split, where the source defines one

    def validate(self) -> None:
        """Refuse malformed data before any training: dtypes, shapes, label range, empty splits."""
        for name in SPLITS:
            split: Split | None = getattr(self, name)
            where = f"task '{self.key}', split '{name}'"
            if split is None:
                if name == "dev_test":
                    continue  # optional
                raise DataError(f"{where}: the split is missing")
            if split.images.dtype != torch.uint8 or split.images.ndim != 4 or split.images.shape[1] not in (1, 3):
                raise DataError(f"{where}: images must be uint8 (N, 1|3, H, W), got {split.images.dtype} {tuple(split.images.shape)}")
            expected = (split.images.shape[0], self.num_classes) if self.multi_label else (split.images.shape[0],)
            if tuple(split.labels.shape) != expected:
                raise DataError(
                    f"{where}: {split.images.shape[0]} images but labels of shape {tuple(split.labels.shape)}, expected {expected}"
                )
            if len(split) == 0:
                raise DataError(f"{where}: the split is empty")
            if self.multi_label:
                if int(split.labels.min()) < 0 or int(split.labels.max()) > 1:
                    raise DataError(f"{where}: multi-hot labels must be 0 or 1")
                continue
            low, high = int(split.labels.min()), int(split.labels.max())
            if low < 0 or high >= self.num_classes:
                raise DataError(f"{where}: label {high if high >= self.num_classes else low} is out of range 0..{self.num_classes - 1}")


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Deterministic random split of range(n) into disjoint parts of the given fractions (the
    last part takes the rounding remainder)."""
    order = np.random.default_rng(seed).permutation(n)
    names = list(fractions)
    out, start = {}, 0
    for i, name in enumerate(names):
        size = n - start if i == len(names) - 1 else int(round(fractions[name] * n))
        out[name] = np.sort(order[start : start + size])
        start += size
    return out


class BatchLoader:
    """Iterates (images float32 normalised, labels) batches on `device`; with `indices=True`,
    (images, labels, indices): each example's position in `split` (int64, on `device`), so a
    module keying a memory by example needs no extra pass (a module opts in with `batch_indices`).

    Shuffling uses its own generator seeded from (seed, epoch), so a run is reproducible and the
    global RNG is untouched. With `shard=(rank, world)` (DDP) every process draws the same global
    batch (order and augmentation) and yields its contiguous 1/world slice of it.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        image_size: int,
        train: bool,
        device: torch.device | str = "cpu",
        augment: bool = True,
        hflip: bool = True,
        min_crop_scale: float = 0.35,
        crop_fallback: str = "clamp",
        seed: int = 0,
        resident: bool = True,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        indices: bool = False,
    ) -> None:
        self.device = torch.device(device)
        rank, world = shard
        if not 0 <= rank < world or batch_size % world:
            raise ValueError(f"shard {rank} of {world} does not split a batch of {batch_size} evenly")
        self.shard = (rank, world)  # (rank, processes): this process trains on its slice of each batch
        self.indices = indices  # yield each batch's positions in the split as a third element
        # resident: the uint8 task data lives on the compute device; else in (pinned) host memory,
        # and each batch is copied over asynchronously
        storage = self.device if resident else torch.device("cpu")
        self.images = split.images.to(storage)
        self.labels = split.labels.to(storage)
        if storage != self.device and self.device.type == "cuda":
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.image_size = image_size
        self.train = train
        self.augment = augment and train
        self.hflip = hflip
        self.min_crop_scale = min_crop_scale
        self.crop_fallback = crop_fallback  # clamp: shrink an oversized side to the image; center: the whole image
        self.seed = seed
        self.epoch = 0
        self._position = (0, 0)  # (epoch, batches consumed) as of the last checkpoint
        self._resume_skip = 0
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train and n >= self.batch_size else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.labels)
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(n, device=self.device, generator=generator) if self.train else torch.arange(n, device=self.device)
        order = order.to(self.images.device)
        rank, world = self.shard
        batch = min(self.batch_size, n)
        if world > 1:  # a split smaller than the global batch: the largest batch every rank can share evenly
            batch -= batch % world
            if batch == 0:
                raise DataError(
                    f"the training split has {n} image(s), fewer than the {world} DDP processes; train it with fewer trainer.devices"
                )
        skip, self._resume_skip = self._resume_skip, 0
        for _ in range(skip):  # resuming mid-epoch: replay the skipped batches' random draws only
            if self.augment:
                torch.rand(batch, 5, device=self.device, generator=generator)
        for i in range(skip, len(self)):
            index = order[i * batch : (i + 1) * batch]
            draws = torch.rand(len(index), 5, device=self.device, generator=generator) if self.augment else None
            if world > 1:  # the global batch's draws are made in full, so each slice matches one process's
                part = slice(rank * len(index) // world, (rank + 1) * len(index) // world)
                index, draws = index[part], None if draws is None else draws[part]
            images = self.images[index].to(self.device, non_blocking=True)
            labels = self.labels[index].to(self.device, non_blocking=True)
            x = self._transform(images, draws)
            x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
            yield (x, labels, index.to(self.device, dtype=torch.int64)) if self.indices else (x, labels)

    # -- resumable position (Lightning saves and restores it with mid-task checkpoints) -----------
    def mark_position(self, consumed: int) -> None:
        """Record that `consumed` batches of the current epoch are done (called before a checkpoint)."""
        epoch = self.epoch - 1
        self._position = (epoch + 1, 0) if consumed >= len(self) else (epoch, consumed)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._position[0], "consumed": self._position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._resume_skip = int(state["epoch"]), int(state["consumed"])

    def _transform(self, images: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if draws is not None:
            x = self._random_resized_crop(x, draws)
        elif x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def _random_resized_crop(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Five uniform draws per image `u`: crop area, aspect ratio, centre x and y, flip."""
        b = x.shape[0]
        area = self.min_crop_scale + (1 - self.min_crop_scale) * u[:, 0]
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
        ratio = torch.exp(log_ratio)
        width = torch.sqrt(area * ratio)  # fractions of the full image
        height = torch.sqrt(area / ratio)
        if self.crop_fallback == "center":  # Nevis: a crop that does not fit falls back to the central (whole) image
            fits = (width <= 1.0) & (height <= 1.0)
            width, height = torch.where(fits, width, 1.0), torch.where(fits, height, 1.0)
        width, height = width.clamp(max=1.0), height.clamp(max=1.0)
        cx = (1 - width) * (2 * u[:, 2] - 1)  # normalised centre, crop stays inside the image
        cy = (1 - height) * (2 * u[:, 3] - 1)
        flip = torch.where((u[:, 4] < 0.5) & self.hflip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=self.device)
        theta[:, 0, 0] = width * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = height
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [b, 3, self.image_size, self.image_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
