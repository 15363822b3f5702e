"""The time audit's error rates: how often it flags honest learners (false positives), and how often
it flags learners that hide 0.5x, 1x and 2x their counted work outside torch (real work 1.5x, 2x,
3x what they are charged), idle and under load (a second process burning a core).

Honest: plain finetuning as a plugin, an SI-style plugin (per-parameter elementwise bookkeeping
every step: work the meter sees and does not charge), and the example plugins ER, LwF, EWC,
BitFit, DER++ (replay through `context.data`) and GDumb (examples/). Hiding: the plain plugin
plus numpy work for k times the CPU time its previous step took, every step. Every task of every
run is one sample; the threshold in force is `meter.unexplained_max` (default) and the audit's
ratio is printed for each, so a threshold can be read off the two distributions.

    python benchmarks/audit_rates.py                 # 2 seeds, idle and loaded (~15 min on 2 cores)
    python benchmarks/audit_rates.py --seeds 1 --no-load
    python benchmarks/audit_rates.py --tiny          # seconds; used by the tests so it cannot rot
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nevisbench import Learner, LearnerConfig, registry
from nevisbench.api.module import TaskModule
from nevisbench.config import compose
from nevisbench.run.runner import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"er": ("nevisbench-er", "nevisbench_er:ERLearner"), "lwf": ("nevisbench-lwf", "nevisbench_lwf:LwFLearner"),
            "ewc": ("nevisbench-ewc", "nevisbench_ewc:EWCLearner"),
            "bitfit": ("nevisbench-example-learner", "nevisbench_bitfit:BitFitLearner"),
            "derpp": ("nevisbench-derpp", "nevisbench_derpp:DERppLearner"),
            "gdumb": ("nevisbench-gdumb", "nevisbench_gdumb:GDumbLearner")}
HIDDEN = {"hide_0.5x": 0.5, "hide_1x": 1.0, "hide_2x": 2.0}  # registered as hide_0_5x, hide_1x, hide_2x


class _Plain(TaskModule):
    hidden = 0.0  # numpy work per step, as a multiple of the previous step's CPU time
    _last: float | None = None

    def training_step(self, batch, batch_idx):
        now = time.process_time()
        if self.hidden and self._last is not None:
            end, a = now + self.hidden * (now - self._last), np.random.rand(128, 128).astype(np.float32)
            while time.process_time() < end:
                a = (a @ a) * np.float32(1e-3)
        self._last = time.process_time()
        return super().training_step(batch, batch_idx)


class _SI(TaskModule):
    """Synaptic-intelligence-style bookkeeping: per-parameter running importance, every step."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            for p in self.parameters():
                if p.grad is not None:
                    state = self.__dict__.setdefault("_omega", {}).setdefault(id(p), torch.zeros_like(p))
                    state.add_(p.grad * p.grad).mul_(0.999).clamp_(max=1e6)


def _learner(module_cls: type, name: str, hidden: float = 0.0) -> type:
    class Config(LearnerConfig):
        pass

    Config.__annotations__ = {"name": str}
    Config.name = name  # type: ignore[attr-defined]

    class _L(Learner):
        def begin_task(self, task, backbone):
            module = module_cls(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)
            module.hidden = hidden
            return module

    from dataclasses import dataclass

    _L.Config = dataclass(Config)
    return _L


def _register(name: str, target: str) -> None:
    found = dict(registry._entry_points())
    found[name] = EntryPoint(name=name, value=target, group=registry.ENTRY_POINT_GROUP)
    registry._entry_points = lambda: found  # type: ignore[assignment]


_THIS = sys.modules[__name__]


def _setup() -> dict[str, bool]:
    """Learner name -> whether it hides work; all registered as plugins of this process."""
    kinds = {"plain": False, "si": False}
    _THIS.PlainLearner = _learner(_Plain, "plain")  # type: ignore[attr-defined]
    _THIS.SILearner = _learner(_SI, "si")  # type: ignore[attr-defined]
    _register("plain", f"{__name__}:PlainLearner")
    _register("si", f"{__name__}:SILearner")
    for name, (folder, target) in EXAMPLES.items():
        sys.path.insert(0, str(ROOT / "examples" / folder))
        _register(name, target)
        kinds[name] = False
    for name, k in HIDDEN.items():
        key = name.replace(".", "_")
        setattr(_THIS, f"Hidden_{key}", _learner(_Plain, key, hidden=k))
        _register(key, f"{__name__}:Hidden_{key}")
        kinds[key] = True
    return kinds


def _audits(learner: str, seed: int, settings: list[str], out: Path) -> list[dict]:
    cfg = compose([*settings, f"learner={learner}", f"seed={seed}", f"out_dir={out}"])
    lines = (run(cfg) / "results.jsonl").read_text().splitlines()
    # a task that failed (EWC's default strength diverges on some seeds here) is not a sample
    return [line["audit"] for line in map(json.loads, lines) if line["status"] == "ok" and line["audit"].get("ratio") is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-load", action="store_true", help="idle only")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--learners", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    kinds = _setup()
    settings = ["trainer=cpu", "trainer.progress_bar=false", "scenario=continual", "stream.tasks=[faces,digits]",
                "data.image_size=48", "data.batch_size=16", "train.max_steps=12", "budget.milestones=0", "on_failure=skip"]
    learners = [name for name in kinds if not args.learners or name in args.learners.split(",")]
    if args.tiny:
        settings[3:] = ["stream.tasks=[faces]", "data.image_size=32", "data.batch_size=8", "train.max_steps=3",
                        "budget.milestones=0", "meter.unexplained_min_seconds=0", "on_failure=skip"]
        learners, args.seeds, args.no_load = ["plain", "hide_2x"], 1, True
    rows: list[tuple[str, str, float, bool]] = []
    for condition in ["idle"] if args.no_load else ["idle", "loaded"]:
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "loaded" else None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for learner in learners:
                    for seed in range(args.seeds):
                        for audit in _audits(learner, seed, settings, Path(tmp)):
                            rows.append((condition, learner, float(audit["ratio"]), bool(audit["flagged"])))
                            print(f"{condition:6} {learner:8} seed {seed}: ratio {audit['ratio']:.2f} "
                                  f"flagged {audit['flagged']}", flush=True)
        finally:
            if burner is not None:
                burner.kill()
    print("\ncondition learner     samples  ratio min/median/max   flagged")
    for condition in sorted({r[0] for r in rows}):
        for learner in learners:
            sel = [r for r in rows if r[0] == condition and r[1] == learner]
            if sel:
                ratios = sorted(r[2] for r in sel)
                print(f"{condition:9} {learner:11} {len(sel):7}  {ratios[0]:.2f}/{np.median(ratios):.2f}/{ratios[-1]:.2f}"
                      f"        {sum(r[3] for r in sel)}/{len(sel)}")
    honest = [r for r in rows if not kinds[r[1]]]
    hiding = [r for r in rows if kinds[r[1]]]
    print(f"false positives: {sum(r[3] for r in honest)}/{len(honest)}; detected: {sum(r[3] for r in hiding)}/{len(hiding)}")
    if honest and hiding:
        print(f"audit ratio, median of hiding runs over median of honest runs: "
              f"{np.median([r[2] for r in hiding]) / np.median([r[2] for r in honest]):.2f}")


if __name__ == "__main__":
    main()
