"""The GPU suite: one command that measures nevisbench where researchers run it, and writes one
Markdown and one JSON report (the device's name in both). On a CUDA machine it takes under 8
minutes (ResNet50, 224 px, bf16, channels_last, batch 256):

1. harness / plain loop: nevisbench's training throughput over a task (the real task path:
   Lightning, FLOP meter, progress bar) / a hand-written loop's on ready tensors; ABBA pairs,
   median (goal >= 0.95);
2. data / model only: the full data path (uint8 task data -> batched crop + flip + normalise on
   the device -> step) / the step alone on ready tensors; ABBA pairs, median (goal >= 0.95);
   and what counting every step costs a plugin: the task's step time with `meter.count=every_step`
   / with `meter.count=cached`; ABBA pairs, median (goal <= 1.05);
3. img/s and MFU of the harness run (executed FLOPs the meter counted / the device's peak from
   Lightning's table, `lightning.fabric.utilities.throughput.get_available_flops`);
4. eager vs compiled (`trainer.compile=true`): img/s, compile seconds, the share of steps that ran
   compiled, and whether the counted FLOPs are identical;
5. learner step times (every learner of learner_step_time.py, conv_prune grouped at groups
   1/2/4/8), with peak memory;
6. a SHORT-shaped synthetic stream: the catalogue's 24 tasks (their split sizes and class counts,
   tasks/nevis_short.yaml), random uint8 images at 64 px, through the runner end to end, with the
   share of wall time spent outside training steps (evaluation, checkpoints, data).

`--tiny` runs the same code on the CPU in a minute or two (ResNet18, 32 px, a few steps, 3 tasks,
the compile section with Dynamo's `aot_eager` backend: inductor's C++ build takes minutes on CPU),
so the suite cannot rot (tests/test_benchmarks.py). Without a GPU the report says the GPU figures
are pending.

    python benchmarks/gpu_suite.py                      # writes benchmarks/reports/gpu_suite-<device>.{md,json}
    python benchmarks/gpu_suite.py --tiny --out /tmp/x  # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_pipeline  # noqa: E402
import learner_step_time  # noqa: E402
from _common import model, premade_batches, quiet, reference_loop, sync, synthetic_split  # noqa: E402
from rich.console import Console  # noqa: E402

from nevisbench.api.learner import LearnerContext  # noqa: E402
from nevisbench.config import compose  # noqa: E402
from nevisbench.learners.finetune import FinetuneConfig, FinetuneLearner  # noqa: E402
from nevisbench.run.runner import StreamRunner, resolve_precision  # noqa: E402
from nevisbench.run.store.results import ResultsStore  # noqa: E402
from nevisbench.run.task import compiling  # noqa: E402
from nevisbench.tasks import get_stream  # noqa: E402
from nevisbench.tasks.catalog import TaskSpec  # noqa: E402
from nevisbench.tasks.loader import BatchLoader, Split, TaskData  # noqa: E402

CATALOGUE = Path(__file__).resolve().parents[1] / "tasks" / "nevis_short.yaml"
NUM_CLASSES = 10


def settings(tiny: bool, gpu: bool) -> dict[str, Any]:
    if tiny:
        return dict(model="resnet18", size=32, batch=8, steps=3, pairs=1, compile_steps=5, step_rounds=1,
                    short_size=32, short_steps=2, short_tasks=3, short_scale=0.004, backend="aot_eager", few_learners=True)
    return dict(model="resnet50" if gpu else "resnet18", size=224 if gpu else 64, batch=256 if gpu else 32,
                steps=100 if gpu else 20, pairs=2, compile_steps=300 if gpu else 40, step_rounds=3,
                short_size=64, short_steps=100 if gpu else 10, short_tasks=24, short_scale=1.0 if gpu else 0.02,
                backend="inductor", few_learners=False)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_flops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The device's dense peak FLOP/s from Lightning's table (`get_available_flops`). An H200 is
    read as its H100 SXM entry: the same GH100 compute (989 TFLOP/s dense bf16); the table's own
    H200 entries (2.0e15 bf16) are the datasheet's with-sparsity figures, and its parser does not
    recognise the plain name "NVIDIA H200" anyway."""
    from lightning.fabric.utilities import throughput

    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision, torch.float32)
    if device.type != "cuda":
        return None, "no peak for a CPU"
    name = torch.cuda.get_device_name(device).lower()
    if "h200" in name and dtype in throughput._CUDA_FLOPS.get("h100 sxm", {}):
        return float(throughput._CUDA_FLOPS["h100 sxm"][dtype]), "Lightning's 'h100 sxm' entry (H200: same dense compute)"
    found = throughput.get_available_flops(device, dtype)
    if found:
        return float(found), "Lightning's get_available_flops"
    return None, f"not in Lightning's table ({name})"


# -- running the real task path -------------------------------------------------------------------
def make_runner(cfg, out: Path, num_classes_hint: int = NUM_CLASSES) -> StreamRunner:
    backbone = model(cfg.backbone.name, num_classes_hint)
    width = backbone.fc.in_features
    backbone.fc = torch.nn.Identity()
    learner = FinetuneLearner(FinetuneConfig(), LearnerContext(scenario="transfer", seed=0, image_size=cfg.data.image_size,
                                                               train=cfg.train, feature_dim=width))
    return StreamRunner(cfg, backbone=backbone, feature_dim=width, store=ResultsStore(out), console=Console(quiet=True),
                        learner=learner)


def harness_task(cfg, split: Split, out: Path) -> dict[str, Any]:
    """One task through `StreamRunner.run_task`: its results line, with the compile statistics."""
    data = TaskData(key="bench", num_classes=NUM_CLASSES, train=split, dev=split, test=split)
    spec = TaskSpec("bench", "bench", "object", NUM_CLASSES, lambda **_: data)
    L.seed_everything(0, verbose=False)
    compiling.reset_stats()
    runner = make_runner(cfg, out)
    runner.store.write_config(OmegaConf.to_yaml(cfg))  # what a run folder holds (its state is checked against it)
    line = runner.run_task(spec, 0)
    return line | {"compile_stats": compiling.stats(), "meter_engine": runner.meter_engine}


def base_cfg(s: dict[str, Any], out: Path, *extra: str):
    return compose([f"backbone.name={s['model']}", "backbone.weights=none", f"data.image_size={s['size']}",
                    f"data.batch_size={s['batch']}", f"data.eval_batch_size={s['batch']}", "data.augment=false",
                    f"train.max_steps={s['steps']}", "budget.milestones=0", f"out_dir={out}", *extra])


def harness_vs_loop(s, device, out: Path, tiny: bool) -> dict[str, Any]:
    cfg = base_cfg(s, out)
    precision = resolve_precision(cfg)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    channels_last = device.type == "cuda"
    split = synthetic_split(s["batch"] * 8, s["size"], NUM_CLASSES)
    batches = premade_batches(split, s["batch"], s["size"], device, channels_last=channels_last)
    lines: list[dict[str, Any]] = []

    def harness() -> float:
        lines.append(harness_task(cfg, split, out))
        return lines[-1]["throughput"]["train_images_per_second"]

    def loop() -> float:
        L.seed_everything(0, verbose=False)
        net = model(s["model"], NUM_CLASSES).to(device)
        net = net.to(memory_format=torch.channels_last) if channels_last else net
        seconds = reference_loop(net, batches, s["steps"], lr=cfg.train.lr, momentum=cfg.train.momentum,
                                 weight_decay=cfg.train.weight_decay, autocast=autocast, device=device)
        return s["steps"] * s["batch"] / seconds

    reset_peak(device)
    if not tiny:
        harness(), loop()  # warm-up: allocator, kernels, cuDNN autotuning
    pairs = []
    for pair in range(s["pairs"]):
        first, second = (harness, loop) if pair % 2 == 0 else (loop, harness)
        a, b = first(), second()
        h, r = (a, b) if first is harness else (b, a)
        pairs.append({"harness_img_s": h, "loop_img_s": r, "ratio": h / r})
    last = lines[-1]
    return {"precision": precision, "channels_last": channels_last, "pairs": pairs,
            "ratio": statistics.median(p["ratio"] for p in pairs), "images_per_second": last["throughput"]["train_images_per_second"],
            "executed_flops_per_second": last["throughput"]["train_flops_per_second"],
            "train_flops": last["flops"]["executed"]["train"], "peak_memory_bytes": peak_memory(device), "eager_line": last}


def every_step_vs_cached(s, out: Path) -> dict[str, Any]:
    """What counting every step costs (`meter.count=every_step`: a third-party plugin's runs): the same
    task through the real task path counted every step / with the cached count (`meter.count=cached`,
    the shipped learners': the first steps and every 32nd counted, so a little above uncounted);
    ratio of training step times, ABBA pairs, median (goal <= 1.05, benchmarks/flop_meter_overhead.py
    --plugin on CPU)."""
    split = synthetic_split(s["batch"] * 8, s["size"], NUM_CLASSES)

    engines: dict[str, str] = {}

    def img_s(count: str) -> float:
        line = harness_task(base_cfg(s, out, f"meter.count={count}"), split, out)
        engines[count] = line["meter_engine"]  # every_step: the native engine where it builds (meter.engine=auto)
        return line["throughput"]["train_images_per_second"]

    pairs = []
    for pair in range(s["pairs"]):
        order = ("every_step", "cached") if pair % 2 == 0 else ("cached", "every_step")
        got = {count: img_s(count) for count in order}
        pairs.append({"every_step_img_s": got["every_step"], "cached_img_s": got["cached"],
                      "ratio": got["cached"] / got["every_step"]})
    return {"pairs": pairs, "ratio": statistics.median(p["ratio"] for p in pairs), "engines": engines}


def data_vs_model(s, device, autocast) -> dict[str, Any]:
    gpu = device.type == "cuda"
    pipeline = BatchLoader(synthetic_split(s["batch"] * 16, s["size"] + s["size"] // 8, NUM_CLASSES), batch_size=s["batch"],
                           image_size=s["size"], train=True, augment=True, device=device, channels_last=gpu)
    ready = premade_batches(synthetic_split(s["batch"] * 4, s["size"], NUM_CLASSES), s["batch"], s["size"], device,
                            channels_last=gpu)
    net = model(s["model"], NUM_CLASSES).to(device)
    net = net.to(memory_format=torch.channels_last) if gpu else net
    data_pipeline.train(net, lambda: ready, 2, device, autocast)  # warm-up
    pairs = []
    for pair in range(s["pairs"]):
        order = [("full", pipeline), ("alone", ready)] if pair % 2 == 0 else [("alone", ready), ("full", pipeline)]
        took = {name: data_pipeline.train(net, lambda b=batches: b, s["steps"], device, autocast) for name, batches in order}
        pairs.append({"full_img_s": s["steps"] * s["batch"] / took["full"], "alone_img_s": s["steps"] * s["batch"] / took["alone"],
                      "ratio": took["alone"] / took["full"]})
    return {"pairs": pairs, "ratio": statistics.median(p["ratio"] for p in pairs)}


def eager_vs_compiled(s, device, out: Path) -> dict[str, Any]:
    compiling.BACKEND = s["backend"]
    split = synthetic_split(s["batch"] * 8, s["size"], NUM_CLASSES)
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["trainer.compile=true"])):
        reset_peak(device)
        start = time.perf_counter()
        line = harness_task(base_cfg(s | {"steps": s["compile_steps"]}, out, *extra), split, out)
        stats = line["compile_stats"]
        stepped = stats["compiled_steps"] + stats["eager_steps"]
        runs[name] = {"images_per_second": line["throughput"]["train_images_per_second"],
                      "train_seconds": line["flops"]["seconds"]["train"], "compile_seconds": line["flops"]["seconds"]["compile"],
                      "wall_seconds": time.perf_counter() - start, "compiled_steps": stats["compiled_steps"],
                      "eager_steps": stats["eager_steps"], "compiled_share": stats["compiled_steps"] / stepped if stepped else 0.0,
                      "train_flops": line["flops"]["train"], "eval_flops": line["flops"]["eval"],
                      "peak_memory_bytes": peak_memory(device)}
    same = runs["eager"]["train_flops"] == runs["compiled"]["train_flops"] and runs["eager"]["eval_flops"] == runs["compiled"]["eval_flops"]
    return {"backend": s["backend"], "steps": s["compile_steps"], "runs": runs, "flops_identical": same,
            "speedup": runs["compiled"]["images_per_second"] / runs["eager"]["images_per_second"]}


def learner_steps(s, device, autocast) -> dict[str, Any]:
    variants = [*learner_step_time.LEARNERS, *[("conv_prune", ["learner.sparsity=0.5", "learner.impl=grouped", f"learner.groups={g}"])
                                               for g in (2, 4, 8)]]
    if s["few_learners"]:  # --tiny: finetune and conv_prune grouped at groups 1/2/4/8 only
        variants = [v for v in variants if v[0] == "finetune" or "learner.impl=grouped" in v[1]]
    batch = min(s["batch"], 64)
    x = torch.randn(batch, 3, s["size"], s["size"], device=device)
    x = x.to(memory_format=torch.channels_last) if device.type == "cuda" else x
    y = torch.arange(batch, device=device) % 10
    rows = []
    for option, overrides in variants:
        label = " ".join([option, *(o.split("=", 1)[1] for o in overrides if o.startswith(("learner.impl", "learner.groups")))])
        reset_peak(device)
        module, optimizer = learner_step_time.build(option, overrides, s["model"], s["size"], device)
        module = module.to(memory_format=torch.channels_last) if device.type == "cuda" else module
        learner_step_time.step(module, optimizer, x, y, autocast)  # warm-up
        times = []
        for _ in range(s["step_rounds"] * 3):
            sync(device)
            start = time.perf_counter()
            learner_step_time.step(module, optimizer, x, y, autocast)
            sync(device)
            times.append(time.perf_counter() - start)
        rows.append({"learner": label, "step_ms": 1000 * statistics.median(times), "peak_memory_bytes": peak_memory(device)})
        del module, optimizer
    dense = rows[0]["step_ms"]
    for row in rows:
        row["ratio_to_finetune"] = row["step_ms"] / dense
    return {"batch": batch, "rows": rows}


def short_shapes(count: int, scale: float) -> list[dict[str, Any]]:
    """The SHORT stream's tasks as (key, classes, split sizes) from the catalogue; a dataset whose
    sizes the catalogue does not state takes its first listed estimate, else 1000/200/200/300."""
    datasets = {d["key"]: d for d in yaml.safe_load(CATALOGUE.read_text())["datasets"]}
    shapes = []
    for spec in get_stream("short").tasks[:count]:
        entry = datasets[spec.key]
        sizes = next((v for k, v in entry["splits"].items() if k.startswith("sizes") and isinstance(v, dict)), None)
        estimated = sizes is None or not any(k == "sizes" for k in entry["splits"])
        sizes = sizes or {"train": 1000, "dev": 200, "dev_test": 200, "test": 300}
        n = {name: max(8, round(sizes.get(name, sizes.get("dev_test", 200)) * scale)) for name in ("train", "dev", "dev_test", "test")}
        shapes.append({"key": spec.key, "num_classes": int(entry["num_classes"]), "sizes": n, "estimated": estimated})
    return shapes


def short_stream(s, device, out: Path) -> dict[str, Any]:
    cfg = compose([f"backbone.name={s['model']}", "backbone.weights=none", f"data.image_size={s['short_size']}",
                   f"data.batch_size={s['batch']}", f"data.eval_batch_size={s['batch'] * 2}", f"train.max_steps={s['short_steps']}",
                   f"train.checkpoint_every_n_steps={max(1, s['short_steps'] // 2)}", "trainer.progress_bar=false", f"out_dir={out}"])
    runner = make_runner(cfg, out)
    rows, wall_all, train_all = [], 0.0, 0.0
    reset_peak(device)
    for index, shape in enumerate(short_shapes(s["short_tasks"], s["short_scale"])):
        splits = {name: synthetic_split(n, s["short_size"], shape["num_classes"], seed=index) for name, n in shape["sizes"].items()}
        data = TaskData(key=shape["key"], num_classes=shape["num_classes"], dev_test=splits.pop("dev_test"), **splits)
        spec = TaskSpec(shape["key"], shape["key"], "object", shape["num_classes"], lambda d=data, **_: d)
        L.seed_everything(index, verbose=False)
        start = time.perf_counter()
        line = runner.run_task(spec, index)
        wall = time.perf_counter() - start
        seconds = line["flops"]["seconds"]
        rows.append({"task": shape["key"], "classes": shape["num_classes"], **{f"n_{k}": v for k, v in shape["sizes"].items()},
                     "estimated_sizes": shape["estimated"], "wall_seconds": wall, "train_seconds": seconds["train"],
                     "eval_seconds": seconds["eval"], "outside_share": 1 - seconds["train"] / wall})
        wall_all, train_all = wall_all + wall, train_all + seconds["train"]
    return {"image_size": s["short_size"], "steps_per_task": s["short_steps"], "size_scale": s["short_scale"], "tasks": rows,
            "wall_seconds": wall_all, "train_seconds": train_all, "outside_share": 1 - train_all / wall_all,
            "peak_memory_bytes": peak_memory(device)}


# -- the report -------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def markdown(r: dict[str, Any]) -> str:
    h, d, e, c, st, sh = r["harness"], r["data"], r["every_step"], r["compile"], r["learners"], r["short"]
    out = [f"# nevisbench GPU suite: {r['device']}", "",
           f"torch {r['torch']}, {r['model']} {r['image_size']} px, batch {r['batch']}, {h['precision']}, "
           f"channels_last={h['channels_last']}, {r['date']}, suite wall time {r['suite_seconds']:.0f} s.", ""]
    if r["pending"]:
        out += ["**GPU figures: pending.** This report was made on a CPU (`--tiny` or no CUDA device); its "
                "numbers only show the suite runs. Run `python benchmarks/gpu_suite.py` on a CUDA machine.", ""]
    mfu = f"{h['mfu']:.3f}" if h["mfu"] is not None else "n/a"
    out += ["| measure | value | goal |", "| --- | ---: | --- |",
            f"| harness / plain loop (median of {len(h['pairs'])} ABBA pairs) | **{h['ratio']:.3f}** | >= 0.95 |",
            f"| data / model only (median of {len(d['pairs'])} ABBA pairs) | **{d['ratio']:.3f}** | >= 0.95 |",
            f"| step time, counted every step (a plugin's `meter.count=every_step`, engine {e['engines'].get('every_step')}) "
            f"/ cached (median of {len(e['pairs'])} ABBA pairs) | **{e['ratio']:.3f}** | <= 1.05 |",
            f"| harness img/s | {h['images_per_second']:.1f} | |",
            f"| MFU (executed FLOPs / peak {r['peak_flops'] or 'n/a'}: {r['peak_source']}) | {mfu} | |",
            f"| peak memory, harness runs | {_gib(h['peak_memory_bytes'])} | |", "",
            f"## Eager vs compiled ({c['steps']} steps, backend {c['backend']})", "",
            "| run | img/s | train s | compile s | compiled steps | eager (counted) steps | compiled share | train FLOPs | peak memory |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, run in c["runs"].items():
        out.append(f"| {name} | {run['images_per_second']:.1f} | {run['train_seconds']:.1f} | {run['compile_seconds']:.1f} | "
                   f"{run['compiled_steps']} | {run['eager_steps']} | {run['compiled_share']:.3f} | {run['train_flops']:.4g} | "
                   f"{_gib(run['peak_memory_bytes'])} |")
    out += ["", f"Counted FLOPs identical (train and eval): **{c['flops_identical']}**; compiled / eager img/s: "
            f"{c['speedup']:.3f}.", "", f"## Learner step times (batch {st['batch']})", "",
            "| learner | step (ms) | ratio to finetune | peak memory |", "| --- | ---: | ---: | ---: |"]
    out += [f"| {row['learner']} | {row['step_ms']:.1f} | {row['ratio_to_finetune']:.3f} | {_gib(row['peak_memory_bytes'])} |"
            for row in st["rows"]]
    out += ["", f"## SHORT-shaped synthetic stream ({len(sh['tasks'])} tasks, {sh['image_size']} px, "
            f"{sh['steps_per_task']} steps per task, sizes x{sh['size_scale']})", "",
            f"Wall {sh['wall_seconds']:.1f} s, of which training steps {sh['train_seconds']:.1f} s: "
            f"**{100 * sh['outside_share']:.1f}% of the wall time is outside training steps** (evaluation, "
            f"checkpoints, data). Peak memory {_gib(sh['peak_memory_bytes'])}.", "",
            "| task | classes | train | dev | dev_test | test | wall s | train s | eval s | outside share |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {t['task']}{' (sizes estimated)' if t['estimated_sizes'] else ''} | {t['classes']} | {t['n_train']} | {t['n_dev']} | "
            f"{t['n_dev_test']} | {t['n_test']} | {t['wall_seconds']:.2f} | {t['train_seconds']:.2f} | {t['eval_seconds']:.2f} | "
            f"{t['outside_share']:.3f} |" for t in sh["tasks"]]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the same code on the CPU, small: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: benchmarks/reports; --tiny: a temp dir)")
    args = parser.parse_args()
    quiet()
    suite_start = time.perf_counter()
    gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda") if gpu else torch.device("cpu")
    s = settings(args.tiny, gpu)
    work = Path(tempfile.mkdtemp(prefix="nevisbench-gpu-suite-"))
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    harness = harness_vs_loop(s, device, work, args.tiny)
    harness.pop("eager_line")
    peak, source = device_peak_flops(device, harness["precision"])
    harness["mfu"] = harness["executed_flops_per_second"] / peak if peak and harness["executed_flops_per_second"] else None
    print(f"harness / plain loop: {harness['ratio']:.4f}", flush=True)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(harness["precision"])
    data = data_vs_model(s, device, autocast)
    print(f"data / model only: {data['ratio']:.4f}", flush=True)
    every_step = every_step_vs_cached(s, work)
    print(f"counted every step / cached, step time: {every_step['ratio']:.4f}", flush=True)
    compiled = eager_vs_compiled(s, device, work)
    print(f"compiled / eager img/s: {compiled['speedup']:.4f}, FLOPs identical: {compiled['flops_identical']}", flush=True)
    learners = learner_steps(s, device, autocast)
    short = short_stream(s, device, work)
    print(f"SHORT-shaped stream: {100 * short['outside_share']:.1f}% of wall time outside training steps", flush=True)
    report = {"device": name, "pending": not gpu, "torch": torch.__version__, "model": s["model"], "image_size": s["size"],
              "batch": s["batch"], "date": time.strftime("%Y-%m-%d %H:%M"), "peak_flops": peak, "peak_source": source,
              "harness": harness, "data": data, "every_step": every_step, "compile": compiled, "learners": learners, "short": short,
              "suite_seconds": time.perf_counter() - suite_start}
    out = args.out or (work / "report" if args.tiny else Path(__file__).resolve().parent / "reports")
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_suite-" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(f"report: {out / stem}.md and .json ({report['suite_seconds']:.0f} s)")
    print(f"harness throughput ratio (median, nevisbench / hand-written loop): {harness['ratio']:.4f}")


if __name__ == "__main__":
    main()
