"""A real publisher's file, end to end (second tier): Fashion-MNIST as Debian's
`dataset-fashion-mnist` package ships it (`/usr/share/datasets/fashion-mnist/`, installed by
.ci/run where apt can). Debian re-gzipped the files, so their checksums differ from the
publisher's; the payload is the original: it is prepared with --no-verify and checked against the
published counts, label histogram and pixel statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nevisbench.errors import DataError
from nevisbench.tasks.cache import load_packed
from nevisbench.tasks.prepare import prepare_task
from nevisbench.tasks.readers.mnist import read_idx_file

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Zalando's published facts: 60000 + 10000 images of 28x28, 6000 / 1000 per class; the training
# images' mean and standard deviation over all pixels, scaled to [0, 1]: 0.2860 and 0.3530
TRAIN_MEAN, TRAIN_STD = 0.2860, 0.3530

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((DEBIAN_FASHION_MNIST / f).is_file() for f in FILES),
                       reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST} lacks its files): "
                              "apt-get install dataset-fashion-mnist"),
]


def test_debian_fashion_mnist_prepares_to_the_published_facts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"fashion_mnist: checksum mismatch, .*-idx[13]-ubyte.gz: md5 [0-9a-f]+, expected"):
        prepare_task("fashion_mnist", tmp_path / "root", DEBIAN_FASHION_MNIST, size=28, verify=True)  # re-gzipped
    status = prepare_task("fashion_mnist", tmp_path / "root", DEBIAN_FASHION_MNIST, size=28, verify=False)
    assert status["splits"] == {"train": 42000, "dev": 9000, "dev_test": 9000, "test": 10000}
    packed = load_packed(tmp_path / "root", "fashion_mnist")
    assert packed.images.shape == (70000, 1, 28, 28)
    train = np.concatenate([packed.splits[s] for s in ("train", "dev", "dev_test")])
    assert np.bincount(packed.labels[train], minlength=10).tolist() == [6000] * 10
    assert np.bincount(packed.labels[packed.splits["test"]], minlength=10).tolist() == [1000] * 10
    pixels = np.asarray(packed.images[np.sort(train)], dtype=np.float64) / 255
    assert abs(pixels.mean() - TRAIN_MEAN) < 5e-4 and abs(pixels.std() - TRAIN_STD) < 5e-4
    original = read_idx_file(DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz", 3)
    assert np.array_equal(packed.images[: len(original), 0], original)  # stored at 28 px: the very pixels
