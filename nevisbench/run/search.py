"""Per-task hyperparameter search (the Nevis protocol), owned by the runner: a learner never sees it.

`search=none` trains each task once. Otherwise each task runs `search.trials` trials: each samples
values of the `search.space` keys (any `train.*` or `learner.*` key) with a seeded Optuna sampler
(`grid`, `random` or `tpe`, seeded with seed + task index), starts from the same state, trains on
`train`, is scored on `dev` (its selected model: best-dev under protocol=nevis), and the trial
with the lowest dev error wins (no retraining). The winner's training is charged to `train`, every
other trial's training to `search`, every dev evaluation to `eval` (see `merge_tallies`).

A space value is one of `loguniform(a,b)`, `uniform(a,b)`, `choice(a,b,...)`, parsed here by a
strict little parser: a malformed space is a one-line ConfigError at compose time.

Each finished trial is recorded in `<run>/state/search_<task index>/` (written atomically), so a
search interrupted mid-task keeps its finished trials and reruns only the unfinished one.
This module imports only the standard library at its top (config checks use the parser).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nevisbench.errors import ConfigError

__all__ = ["Dist", "parse_space", "flat_space", "check_search", "TaskSearch", "merge_tallies", "trial_config"]

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "successive_halving", "hyperband")
REDUCTION_FACTOR = 3  # Optuna's default for both pruners: a third of the trials at a rung go on
SEARCH_NAMES = ("none", "nevis_cheap", "nevis", "custom")
_CALL = re.compile(r"^\s*(loguniform|uniform|choice)\s*\((.*)\)\s*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_FORMS = "loguniform(a,b), uniform(a,b) or choice(a,b,...)"


@dataclass(frozen=True)
class Dist:
    kind: str  # loguniform | uniform | choice
    args: tuple[Any, ...]

    def corners(self) -> tuple[Any, ...]:
        """Values that stand for the whole range when checking types and bounds."""
        return self.args

    def optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.args))
        return FloatDistribution(float(self.args[0]), float(self.args[1]), log=self.kind == "loguniform")


def _number(text: str) -> int | float | None:
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else None
    return None


def _arg(text: str) -> Any:
    """A choice value: a number, true/false, or a bare word."""
    number = _number(text)
    if number is not None:
        return number
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _WORD.match(text):
        return text
    raise ValueError(f"'{text}' is not a number, true/false or a plain word")


def parse_dist(key: str, text: Any) -> Dist:
    """One space value; raises a one-line ConfigError naming the key, the value and the valid forms."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"Invalid value for 'search.space.{key}': {text!r}; {why} (valid: {_FORMS})")

    match = _CALL.match(text) if isinstance(text, str) else None
    if match is None:
        raise bad("not a distribution")
    kind, inner = match.groups()
    parts = [p.strip() for p in inner.split(",")]
    if any(not p for p in parts):
        raise bad("an argument is empty")
    if kind == "choice":
        try:
            values = tuple(_arg(p) for p in parts)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if len(set(map(repr, values))) != len(values):
            raise bad("a choice is repeated")
        return Dist(kind, values)
    if len(parts) != 2:
        raise bad(f"{kind} takes two numbers, low and high")
    low, high = (_number(p) for p in parts)
    if low is None or high is None:
        raise bad(f"{kind} takes two finite numbers")
    if not low < high:
        raise bad("low must be below high")
    if kind == "loguniform" and low <= 0:
        raise bad("loguniform needs 0 < low")
    return Dist(kind, (float(low), float(high)))


def flat_space(space: Any) -> dict[str, Any]:
    """`{train: {lr: "..."}}` -> `{"train.lr": "..."}` (a plain dict from the config's `search.space`)."""
    from nevisbench.config.keys import flatten

    return flatten(space or {})


def parse_space(space: Any) -> dict[str, Dist]:
    return {key: parse_dist(key, value) for key, value in sorted(flat_space(space).items())}


def check_search(cfg: Any, check_trial: Any) -> None:
    """The `search` group's values (called by the config checks; `check_trial(cfg)` checks a trial's
    config, so a space value out of its key's range fails here, before anything runs)."""
    from omegaconf import OmegaConf

    search = cfg.search
    if search.name not in SEARCH_NAMES:
        raise ConfigError(f"Invalid value for 'search.name': {search.name!r}; valid: {', '.join(SEARCH_NAMES)}")
    if search.sampler not in SAMPLERS:
        raise ConfigError(f"Invalid value for 'search.sampler': {search.sampler!r}; valid: {', '.join(SAMPLERS)}")
    if search.trials < 1:
        raise ConfigError(f"Invalid value for 'search.trials': {search.trials}; it must be >= 1")
    if search.parallel < 1:
        raise ConfigError(f"Invalid value for 'search.parallel': {search.parallel}; it must be >= 1")
    if search.parallel > 1 and search.name == "none":
        raise ConfigError(f"Invalid value for 'search.parallel': {search.parallel}; search=none runs one trial per "
                          "task (valid: 1, or choose a search)")
    if search.parallel > 1 and search.sampler == "tpe":
        raise ConfigError(f"Invalid value for 'search.parallel': {search.parallel} with search.sampler=tpe; TPE draws "
                          "from earlier results, so parallel trials would differ from sequential ones (valid: "
                          "search.parallel=1 with tpe, or sampler=grid|random with any search.parallel)")
    if search.parallel > 1:
        from nevisbench.run.distributed import world_size

        if world_size(cfg.trainer) > 1:
            raise ConfigError(f"Invalid value for 'search.parallel': {search.parallel} with trainer.devices="
                              f"{cfg.trainer.devices}; each trial would need every device (valid: search.parallel=1 "
                              "to train each trial on several devices, or trainer.devices=1 to run trials side by side)")
    if search.pruner not in PRUNERS:
        raise ConfigError(f"Invalid value for 'search.pruner': {search.pruner!r}; valid: {', '.join(PRUNERS)}")
    if search.pruner != "none":
        if search.name == "none":
            raise ConfigError(f"Invalid value for 'search.pruner': {search.pruner!r} with search=none; there are no "
                              "trials to prune (valid: none, or choose a search)")
        if search.parallel > 1:
            raise ConfigError(f"Invalid value for 'search.pruner': {search.pruner!r} with search.parallel="
                              f"{search.parallel}; a pruning decision reads the trials finished before it, so parallel "
                              "trials would prune differently (valid: search.pruner=none, or search.parallel=1)")
        if cfg.budget.milestones < 2:
            raise ConfigError(f"Invalid value for 'search.pruner': {search.pruner!r} with budget.milestones="
                              f"{cfg.budget.milestones}; the milestones are its rungs (valid: budget.milestones >= 2, "
                              "or search.pruner=none)")
    space = parse_space(OmegaConf.to_container(search.space, resolve=True))
    if search.name == "none":
        if space or search.trials != 1:
            raise ConfigError("search=none takes no search.space and search.trials=1; choose search=custom to search")
        return
    if not space:
        raise ConfigError(f"Invalid value for 'search.space': empty; name at least one key, e.g. "
                          f"search.space.train.lr=loguniform(1e-4,1e-1) (valid: {_FORMS})")
    for key, dist in space.items():
        if not key.startswith(("train.", "learner.")) or key == "learner.name":
            raise ConfigError(f"Invalid key 'search.space.{key}': only train.* and learner.* keys can be searched")
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ConfigError(f"Invalid key 'search.space.{key}': '{key}' is not a key of the run config")
        for value in dist.corners():
            try:
                check_trial(trial_config(cfg, {key: value}))
            except ConfigError as exc:
                raise ConfigError(f"Invalid value for 'search.space.{key}': {value!r} gives: {exc}") from None
            except Exception as exc:
                raise ConfigError(f"Invalid value for 'search.space.{key}': {value!r} does not fit '{key}' "
                                  f"({str(exc).splitlines()[0]})") from None
    if search.sampler == "grid":
        if any(d.kind != "choice" for d in space.values()):
            raise ConfigError("search.sampler=grid takes choice(...) values only; use random or tpe for ranges")
        cells = math.prod(len(d.args) for d in space.values())
        if search.trials > cells:
            raise ConfigError(f"Invalid value for 'search.trials': {search.trials}; the grid has {cells} cells")


def trial_config(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `cfg` with the trial's values set (type-checked by the schema)."""
    from omegaconf import OmegaConf

    out = cfg.copy()
    for key, value in overrides.items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def merge_tallies(winner: Any, losers: list[Any]) -> Any:
    """The task's tally: the winner's training as `train`, the others' training as `search`, every
    trial's evaluation (dev milestones) as `eval`."""
    out = winner.copy()
    for t in losers:
        out.search += t.train + t.search
        out.executed_search += t.executed_train + t.executed_search
        out.seconds_search += t.seconds_train + t.seconds_search
        out.eval += t.eval
        out.executed_eval += t.executed_eval
        out.seconds_eval += t.seconds_eval
        out.seconds_compile += t.seconds_compile
    return out


class TaskSearch:
    """The trials of one task: their sampled values (Optuna ask/tell) and their records on disk
    (read by every process; written only by a `writer`: not by a DDP rank other than 0)."""

    def __init__(self, cfg: Any, index: int, state_dir: Path, *, writer: bool = True) -> None:
        from omegaconf import OmegaConf

        self.writer = writer
        self.enabled = cfg.search.name != "none"
        self.trials = int(cfg.search.trials) if self.enabled else 1
        self.space = parse_space(OmegaConf.to_container(cfg.search.space, resolve=True)) if self.enabled else {}
        self.folder = Path(state_dir) / f"search_{index}"
        self.pruning = False
        self._study = None
        self._asked: list[Any] = []  # asked, not yet told, oldest first
        self._reported: dict[int, int] = {}  # milestones reported, by Optuna trial number
        self._rungs = 0  # milestones that can stop a trial (all but the last)
        if self.enabled:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            seed = int(cfg.seed) + index
            sampler = {
                "grid": lambda: optuna.samplers.GridSampler({k: list(d.args) for k, d in self.space.items()}, seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            }[cfg.search.sampler]()
            self.pruning = cfg.search.pruner != "none"
            pruner, name = None, None
            if self.pruning:  # rung j is milestone j: its step is REDUCTION_FACTOR**j (see `report`)
                last = REDUCTION_FACTOR ** (int(cfg.budget.milestones) - 1)
                pruner = {
                    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                        min_resource=1, reduction_factor=REDUCTION_FACTOR),
                    "hyperband": lambda: optuna.pruners.HyperbandPruner(
                        min_resource=1, max_resource=last, reduction_factor=REDUCTION_FACTOR),
                }[cfg.search.pruner]()
                self._rungs = int(cfg.budget.milestones) - 1
                name = f"task_{index}"  # Hyperband's brackets hash the study's name: a fixed one keeps them fixed
            self._study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner, study_name=name)

    def ask(self) -> dict[str, Any]:
        """The next trial's values (none when search=none)."""
        if not self.enabled:
            return {}
        trial = self._study.ask({k: d.optuna() for k, d in self.space.items()})
        self._asked.append(trial)
        return dict(trial.params)

    def report(self, anytime: list[dict[str, Any]]) -> bool:
        """Report the milestones of the trial in progress (the oldest not yet told) that are not yet
        reported, milestone j as step REDUCTION_FACTOR**j (the milestones are log-spaced in FLOPs,
        so this is the trial's compute on Optuna's integer rung grid: rung j is milestone j);
        return whether the pruner stops the trial there. The last milestone is no rung: a trial
        that reaches it has finished its training, and is not pruned."""
        if not self.pruning or not anytime or not self._asked:
            return False  # (no trial in progress: e.g. the winner retrained for scoring after a resume)
        trial = self._asked[0]
        reported = self._reported.get(trial.number, 0)
        rungs = min(len(anytime), self._rungs)
        prune = False
        for j in range(reported, rungs):
            trial.report(float(anytime[j]["dev_error"]), REDUCTION_FACTOR ** j)
            # the pruner is asked once per evaluation (milestones due at the same step share one), as
            # during training: asking records the trial at its rungs, which later trials compete with,
            # so a trial read back on resume is replayed the same way
            if j + 1 == rungs or anytime[j + 1]["step"] != anytime[j]["step"]:
                prune = trial.should_prune()
        self._reported[trial.number] = max(reported, rungs)
        return prune

    def tell(self, dev_error: float | None, *, pruned: bool = False) -> None:
        """The result of the oldest trial asked and not yet told (trials are told in order)."""
        if not self.enabled:
            return
        import optuna

        trial = self._asked.pop(0)
        try:
            if pruned:
                self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif dev_error is None:
                self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(trial, dev_error)
        except RuntimeError as exc:  # GridSampler stops the study after its last cell: meaningless in ask/tell
            if "Study.stop" not in str(exc):  # (the trial is recorded before that; Optuna stores it in a finally)
                raise

    # -- records of finished trials (resume) -------------------------------------------------------
    def record_path(self, k: int) -> Path:
        return self.folder / f"trial_{k}.pt"

    def weights_path(self, k: int) -> Path:
        return self.folder / f"trial_{k}_weights.pt"

    def checkpoint(self, index: int, k: int, default: Path) -> Path:
        """The mid-trial checkpoint: the task's own with search=none."""
        return default if not self.enabled else self.folder.parent / f"task_{index}_trial_{k}.ckpt"

    def load(self, k: int) -> dict[str, Any] | None:
        import torch

        path = self.record_path(k)
        if not self.enabled or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            from nevisbench.errors import DataError

            raise DataError(f"Cannot resume: the search record {path} is damaged ({type(exc).__name__}); "
                            "delete it to rerun that trial") from None

    def save(self, k: int, record: dict[str, Any], weights: dict[str, Any] | None) -> None:
        """Keep a finished trial: its weights (only while it is the best so far), then its record."""
        import torch

        from nevisbench.run.results import atomic_write_bytes

        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if weights is not None:
            atomic_write_bytes(self.weights_path(k), lambda handle: torch.save(weights, handle))
        atomic_write_bytes(self.record_path(k), lambda handle: torch.save(record, handle))

    def load_weights(self, k: int) -> dict[str, Any] | None:
        import torch

        path = self.weights_path(k)
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None

    def drop_weights(self, keep: int) -> None:
        if not self.writer:
            return
        for path in self.folder.glob("trial_*_weights.pt"):
            if path != self.weights_path(keep):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        import shutil

        if not self.writer:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in self.folder.parent.glob(f"task_{self.folder.name.removeprefix('search_')}_trial_*.ckpt"):
            path.unlink(missing_ok=True)
