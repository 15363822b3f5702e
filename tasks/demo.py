"""The demo stream: four small tasks from data that installed packages ship, so it runs offline.

- `digits`   (ocr):     scikit-learn's `load_digits`, 1797 real handwritten 8x8 digits, 10 classes.
- `textures` (texture): non-overlapping patches cut from scikit-image's bundled photos (brick,
                        grass, gravel, moon surface), one class per photo, as Nevis builds Brodatz.
- `faces`    (face):    scikit-image's `lfw_subset.npy`: 100 LFW faces vs 100 non-face patches.
- `shapes`   (object):  procedurally drawn filled shapes (5 classes) on noisy backgrounds.

Splits are deterministic random assignments from the seed: 56% train, 12% dev, 10% dev_test, 22%
test (Nevis' four splits). Images are generated at `image_size`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nevisbench.tasks.catalog import Stream, TaskSpec, register_stream
from nevisbench.tasks.loader import Split, TaskData, split_indices

__all__ = ["demo_stream", "TEXTURE_PHOTOS", "SHAPES"]

FRACTIONS = {"train": 0.56, "dev": 0.12, "dev_test": 0.10, "test": 0.22}
TEXTURE_PHOTOS = ("brick", "grass", "gravel", "moon")
TEXTURE_PATCH = 64  # pixels; 512x512 photos give 64 non-overlapping patches per class
SHAPES = ("circle", "square", "triangle", "cross", "ring")
SHAPES_PER_CLASS = 120


def _resize(images: np.ndarray, size: int) -> torch.Tensor:
    """float images (N, C, H, W) in [0, 1] -> uint8 (N, C, size, size)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _task_data(key: str, images: torch.Tensor, labels: np.ndarray, num_classes: int, seed: int, *, hflip: bool = True) -> TaskData:
    parts = split_indices(len(labels), FRACTIONS, seed)
    y = torch.from_numpy(labels.astype(np.int64))
    splits = {name: Split(images[idx], y[idx]) for name, idx in parts.items()}
    return TaskData(key=key, num_classes=num_classes, hflip=hflip, **splits)


def load_digits_task(*, image_size: int, seed: int, **_: object) -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:, None] / 16.0  # values 0..16
    return _task_data("digits", _resize(images, image_size), digits.target, 10, seed, hflip=False)


def load_textures_task(*, image_size: int, seed: int, **_: object) -> TaskData:
    from skimage import color, data

    patches, labels = [], []
    for label, photo in enumerate(TEXTURE_PHOTOS):
        image = getattr(data, photo)()
        if image.ndim == 3:
            image = color.rgb2gray(image)
        image = image.astype(np.float32) / (255.0 if image.max() > 1 else 1.0)
        rows, cols = image.shape[0] // TEXTURE_PATCH, image.shape[1] // TEXTURE_PATCH
        for r in range(rows):
            for c in range(cols):
                patches.append(image[r * TEXTURE_PATCH : (r + 1) * TEXTURE_PATCH, c * TEXTURE_PATCH : (c + 1) * TEXTURE_PATCH])
                labels.append(label)
    images = np.stack(patches)[:, None]
    return _task_data("textures", _resize(images, image_size), np.array(labels), len(TEXTURE_PHOTOS), seed)


def load_faces_task(*, image_size: int, seed: int, **_: object) -> TaskData:
    import skimage

    path = Path(skimage.data.__file__).parent / "lfw_subset.npy"
    images = np.load(path)  # (200, 25, 25) in [0, 1]: 100 faces, then 100 non-faces
    labels = np.array([1] * 100 + [0] * 100)
    return _task_data("faces", _resize(images[:, None], image_size), labels, 2, seed)


def _draw_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    from skimage import draw

    canvas = np.clip(rng.uniform(0.0, 0.35, 3)[:, None, None] + rng.normal(0, 0.06, (3, size, size)), 0, 1)
    colour = rng.uniform(0.55, 1.0, 3)
    r = rng.uniform(0.22, 0.38) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    angle = rng.uniform(0, 2 * np.pi)
    shape = (size, size)
    if kind == "circle":
        rr, cc = draw.disk((cy, cx), r, shape=shape)
    elif kind == "ring":
        outer = draw.disk((cy, cx), r, shape=shape)
        mask = np.zeros(shape, bool)
        mask[outer] = True
        mask[draw.disk((cy, cx), r * 0.55, shape=shape)] = False
        rr, cc = np.nonzero(mask)
    else:
        corners = {"square": 4, "triangle": 3}.get(kind)
        if corners:
            t = angle + np.arange(corners) * 2 * np.pi / corners
            rr, cc = draw.polygon(cy + r * np.sin(t), cx + r * np.cos(t), shape=shape)
        else:  # cross: two rotated bars
            mask = np.zeros(shape, bool)
            for a in (angle, angle + np.pi / 2):
                dy, dx, ny, nx = np.sin(a) * r, np.cos(a) * r, np.cos(a) * r * 0.3, -np.sin(a) * r * 0.3
                ys = [cy - dy - ny, cy - dy + ny, cy + dy + ny, cy + dy - ny]
                xs = [cx - dx - nx, cx - dx + nx, cx + dx + nx, cx + dx - nx]
                mask[draw.polygon(ys, xs, shape=shape)] = True
            rr, cc = np.nonzero(mask)
    canvas[:, rr, cc] = colour[:, None]
    return canvas


def load_shapes_task(*, image_size: int, seed: int, **_: object) -> TaskData:
    rng = np.random.default_rng(10_000 + seed)
    draw_size = max(image_size, 32)
    images, labels = [], []
    for class_id, kind in enumerate(SHAPES):
        for _copy in range(SHAPES_PER_CLASS):
            images.append(_draw_shape(kind, draw_size, rng))
            labels.append(class_id)
    return _task_data("shapes", _resize(np.stack(images), image_size), np.array(labels), len(SHAPES), seed)


@register_stream("demo")
def demo_stream() -> Stream:
    return Stream(
        name="demo",
        description="Offline demo: digits, textures, faces, shapes (bundled with scikit-learn/scikit-image)",
        tasks=(
            TaskSpec("digits", "Handwritten digits (sklearn)", "ocr", 10, load_digits_task, source="sklearn.datasets.load_digits"),
            TaskSpec(
                "textures", "Texture patches (skimage photos)", "texture", len(TEXTURE_PHOTOS), load_textures_task, source="skimage.data"
            ),
            TaskSpec("faces", "Faces vs non-faces (LFW subset)", "face", 2, load_faces_task, source="skimage lfw_subset.npy"),
            TaskSpec("shapes", "Drawn shapes", "object", len(SHAPES), load_shapes_task, source="procedural"),
        ),
    )
