"""Peak resident memory of `data prepare` on synthetic archives of realistic size: FGVC-Aircraft
(`fgvc-aircraft-2013b.tar.gz`), Pascal VOC 2012 (`VOCtrainval_11-May-2012.tar`) and Stanford Dogs
(`images.tar` + `lists.tar`), laid out as the publishers' files are, each image a real JPEG padded
with random bytes to the real archives' mean image size. Each task is prepared in a fresh process
that reports its peak RSS (`ru_maxrss`) and the RSS it had before preparing (the interpreter and
its imports); the goal is a peak that does not grow with the archive: the last line is the worst
task's peak at the largest size / its peak at the smallest (goal: ~1.0).

    python benchmarks/prepare_memory.py                      # 0.1 and 0.3 GB per archive, a few minutes on 2 cores
    python benchmarks/prepare_memory.py --size-gb 2.7        # FGVC-Aircraft's real size
    python benchmarks/prepare_memory.py --tiny               # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

# task -> mean bytes per image in the real archive (archive size / images)
IMAGE_BYTES = {"fgvc_aircraft_family": 270_000, "pascal_voc2012": 110_000, "stanford_dogs": 38_000}


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def _images(n: int, per_image: int):
    """n distinct JPEGs of `per_image` bytes: one real image, random bytes after its end marker."""
    base, rng = _jpeg(), np.random.default_rng(1)
    for _ in range(n):
        yield base + rng.integers(0, 256, max(per_image - len(base), 0), dtype=np.uint8).tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _fgvc(folder: Path, n: int) -> None:
    top = "fgvc-aircraft-2013b/data"
    ids = [f"{1_000_000 + i:07d}" for i in range(n)]
    families = [f"Family {k}" for k in range(70)]
    with tarfile.open(folder / "fgvc-aircraft-2013b.tar.gz", "w:gz", compresslevel=1) as tar:
        for image_id, data in zip(ids, _images(n, IMAGE_BYTES["fgvc_aircraft_family"]), strict=True):
            _add(tar, f"{top}/images/{image_id}.jpg", data)
        _add(tar, f"{top}/families.txt", "\n".join(families).encode())
        for part, chosen in (("trainval", ids[: 2 * n // 3]), ("test", ids[2 * n // 3:])):
            _add(tar, f"{top}/images_family_{part}.txt", "\n".join(f"{i} {families[int(i) % 70]}" for i in chosen).encode())


def _voc2012(folder: Path, n: int) -> None:
    base, ids = "VOCdevkit/VOC2012", [f"2012_{i:06d}" for i in range(n)]
    with tarfile.open(folder / "VOCtrainval_11-May-2012.tar", "w") as tar:
        for image_id in ids:
            _add(tar, f"{base}/Annotations/{image_id}.xml", b"<annotation><object><name>dog</name></object></annotation>")
        for image_id, data in zip(ids, _images(n, IMAGE_BYTES["pascal_voc2012"]), strict=True):
            _add(tar, f"{base}/JPEGImages/{image_id}.jpg", data)
        _add(tar, f"{base}/ImageSets/Main/train.txt", "\n".join(ids[: n // 2]).encode())
        _add(tar, f"{base}/ImageSets/Main/val.txt", "\n".join(ids[n // 2:]).encode())


def _dogs(folder: Path, n: int) -> None:
    from scipy.io import savemat

    files = [f"n{k % 120:08d}-Breed_{k % 120}/n{k % 120:08d}_{k}.jpg" for k in range(n)]
    with tarfile.open(folder / "images.tar", "w") as tar:
        for file, data in zip(files, _images(n, IMAGE_BYTES["stanford_dogs"]), strict=True):
            _add(tar, f"Images/{file}", data)
    with tarfile.open(folder / "lists.tar", "w") as tar:
        for name, chosen in (("train_list.mat", files[: n // 2]), ("test_list.mat", files[n // 2:])):
            cells = np.empty((len(chosen), 1), dtype=object)
            for i, file in enumerate(chosen):
                cells[i, 0] = np.array([file])
            buffer = io.BytesIO()
            savemat(buffer, {"file_list": cells})
            _add(tar, name, buffer.getvalue())


BUILD = {"fgvc_aircraft_family": _fgvc, "pascal_voc2012": _voc2012, "stanford_dogs": _dogs}


def _measure(key: str, folder: str, root: str, queue) -> None:  # in a fresh process
    from nevisbench.tasks.prepare import prepare_task

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    status = prepare_task(key, Path(root), Path(folder), size=64, verify=False)
    queue.put((before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, status["num_examples"], time.perf_counter() - start))


def run(key: str, gigabytes: float, work: Path) -> dict:
    folder = work / f"{key}-{gigabytes}"
    folder.mkdir(parents=True)
    BUILD[key](folder, max(int(gigabytes * 1e9 / IMAGE_BYTES[key]), 10))
    size = sum(p.stat().st_size for p in folder.iterdir())
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(key, str(folder), str(work / f"root-{key}-{gigabytes}"), queue))
    process.start()
    before, peak, examples, seconds = queue.get()
    process.join()
    return {"task": key, "archive_gb": size / 1e9, "examples": examples, "rss_before_mib": before / 1024,
            "peak_rss_mib": peak / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, nargs="+", default=[0.1, 0.3], help="archive size(s) per task, GB")
    parser.add_argument("--tasks", nargs="+", default=list(BUILD), choices=list(BUILD))
    parser.add_argument("--workdir", type=Path, default=None, help="where the archives are written (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="5 and 15 MB archives: seconds")
    args = parser.parse_args()
    sizes = sorted([0.005, 0.015] if args.tiny else args.size_gb)
    ratios = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        print(f"{'task':<22} {'archive GB':>10} {'examples':>9} {'RSS before MiB':>15} {'peak RSS MiB':>13} {'seconds':>8}")
        for key in args.tasks:
            peaks = []
            for gigabytes in sizes:
                r = run(key, gigabytes, Path(work))
                peaks.append(r["peak_rss_mib"])
                print(f"{r['task']:<22} {r['archive_gb']:>10.2f} {r['examples']:>9} {r['rss_before_mib']:>15.0f} "
                      f"{r['peak_rss_mib']:>13.0f} {r['seconds']:>8.1f}", flush=True)
            ratios.append(peaks[-1] / peaks[0])
    print(f"peak RSS ratio, largest / smallest archive (worst task; goal ~1.0): {max(ratios):.3f}")


if __name__ == "__main__":
    main()
