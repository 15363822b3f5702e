"""The `search` group: its names, its space grammar and its checks (the search itself runs in
`nevisbench.run.search.study`).

A space value is one of `loguniform(a,b)`, `uniform(a,b)`, `choice(a,b,...)`, parsed here by a
strict little parser: a malformed space is a one-line ConfigError at compose time. `check_search`
runs with the other config checks (`nevisbench.config.checks`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from nevisbench.compute.hardware import world_size
from nevisbench.config.keys import flatten
from nevisbench.errors import ConfigError

__all__ = ["Dist", "SAMPLERS", "PRUNERS", "SEARCH_NAMES", "parse_space", "flat_space", "check_search", "trial_config",
           "searches_learner"]

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "successive_halving", "hyperband")
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
    return flatten(space or {})


def searches_learner(cfg: Any) -> bool:
    """Whether the run's search space names a `learner.*` key (each trial then prepares its own learner)."""
    if cfg.get("search") is None or cfg.search.name == "none":
        return False
    return any(key.startswith("learner.") for key in flat_space(OmegaConf.to_container(cfg.search.space, resolve=True)))


def parse_space(space: Any) -> dict[str, Dist]:
    return {key: parse_dist(key, value) for key, value in sorted(flat_space(space).items())}


def check_search(cfg: Any, check_trial: Any) -> None:
    """The `search` group's values (called by the config checks; `check_trial(cfg)` checks a trial's
    config, so a space value out of its key's range fails here, before anything runs)."""
    _check_settings(cfg)
    _check_space(cfg, check_trial)


def _check_settings(cfg: Any) -> None:
    """The search's name, sampler, trial count, parallelism and pruner, and how they combine."""
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
    if search.parallel > 1 and world_size(cfg.trainer) > 1:
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


def _check_space(cfg: Any, check_trial: Any) -> None:
    """The space parses, names existing train.*/learner.* keys, every value it can draw fits its
    key, and a grid has enough cells."""
    search = cfg.search
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
    out = cfg.copy()
    for key, value in overrides.items():
        OmegaConf.update(out, key, value, merge=False)
    return out
