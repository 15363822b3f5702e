"""The public learner API.

A learner turns a backbone into one `LightningModule` per task. Its verbs are the names the runner
calls and the names its errors use:

- `prepare(backbone) -> backbone`: once per stream, before the first task (prune it, add adapters...;
  `backbone` is None for a learner that `brings_backbone`: it returns its own network).
- `begin_task(task, backbone) -> LightningModule`: for each task; `backbone` is this task's starting
  point, a private copy (the prepared backbone in the `transfer` scenario, the previous task's in
  `continual`). The default wraps it with a new linear head (`task_module`).
- `end_task(task, module)`: after each finished task.
- `state_dict()` / `load_state_dict(state)`: the learner's own state across tasks, for resume.
- `task_report(task) -> dict`: optional facts for the task's results line (`learner_report`).
- `revisit_module(task, module, head) -> nn.Module`: with `eval.revisit=true`, the model that
  predicts an earlier task now (default: the current backbone under the head that task ended with).

A learner draws training examples (current and earlier tasks; never dev or test) from
`self.context.data` (`nevisbench.run.learner.data.StreamData`): see docs/writing-a-learner.md.

The runner owns the scenario (which backbone a task starts from), the FLOP meter, the results
store and the loggers: no learner can change what is counted.

The API is stable by name: `API_VERSION` numbers it, and a plugin class is checked when loaded
(`check_api`): a public method that is not one of the verbs above (e.g. `build_module`, a verb of
an earlier API, or a misspelt `end_tsk`) would never be called, and the plugin would run as plain
finetuning; it is refused in one line. Helpers are private (`_name`) or listed in `helpers`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from nevisbench.api.types import LearnerConfig, LearnerContext, TaskInfo

if TYPE_CHECKING:  # torch and Lightning load only when a run starts, not to validate a config
    import lightning as L
    from torch import nn

    from nevisbench.api.module import TaskModule

__all__ = ["Learner", "LearnerConfig", "LearnerContext", "TaskInfo", "API_VERSION", "check_api", "clone_module",
           "detach_derived", "replace_submodule"]

API_VERSION = 2  # 1: setup(backbone), build_module(backbone, task), begin_task(task); 2: the verbs below
# verbs of API 1, and the verb that replaced each
RETIRED = {"build_module": "begin_task", "setup": "prepare"}


def detach_derived(module: nn.Module) -> nn.Module:
    """Detach, in place, the tensors that hooks derive at every forward (e.g. the masked `weight`
    of `torch.nn.utils.prune`, weight_orig * weight_mask): plain non-leaf attributes that deepcopy
    and pickle refuse; the hook recomputes them at the next forward."""
    import torch

    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                setattr(sub, name, value.detach())
    return module


def clone_module(module: nn.Module) -> nn.Module:
    """A deep copy of `module` (derived tensors detached first, see `detach_derived`)."""
    return copy.deepcopy(detach_derived(module))


def replace_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of `root`'s submodule called `name` (a dotted path such as 'layer1.0.conv2')."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


class Learner:
    """Base class of every learner. Subclasses set `Config` and override any of the verbs."""

    Config: ClassVar[type[LearnerConfig]] = LearnerConfig
    # the API version the plugin is written for (checked when loaded; see check_api)
    api_version: ClassVar[int] = API_VERSION
    # public methods of a subclass that are not verbs (the runner never calls them)
    helpers: ClassVar[tuple[str, ...]] = ()
    # False: the runner refuses trainer.devices > 1 (e.g. the module changes its structure mid-fit,
    # which Lightning's DDP wrapper cannot follow)
    supports_ddp: ClassVar[bool] = True
    # the backbone families (nevisbench.backbones.FAMILIES) the learner's rules apply to; a run on
    # another family is refused in one line before anything is written. None: any backbone
    backbone_families: ClassVar[tuple[str, ...] | None] = None
    # True: `prepare(None)` builds the learner's own network and sets `self.feature_dim`; the runner
    # builds no `backbone.name` first
    brings_backbone: ClassVar[bool] = False
    # the name outputs give the network `prepare()` returns when it is the learner's own (not the
    # configured backbone.name); None: its registry name, else its class name
    backbone_name: ClassVar[str | None] = None

    def __init__(self, config: LearnerConfig, context: LearnerContext) -> None:
        self.config = config
        self.context = context
        # prepare() may change it (pruning, truncation); 0 until a learner that brings its own backbone sets it
        self.feature_dim: int = context.feature_dim or 0

    def prepare(self, backbone: nn.Module) -> nn.Module:
        """Adapt the pretrained backbone once per stream (prune it, add adapters, ...); with
        `brings_backbone`, `backbone` is None and this returns the learner's own network."""
        return backbone

    def begin_task(self, task: TaskInfo, backbone: nn.Module) -> L.LightningModule:
        """The LightningModule that trains on `task`, built around `backbone` (a private copy)."""
        return self.task_module(backbone, task)

    def end_task(self, task: TaskInfo, module: L.LightningModule) -> None:
        """Called after `task` finished training and was scored."""

    def state_dict(self) -> dict[str, Any]:
        """The learner's own state across tasks (the runner saves the carried backbone itself)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def revisit_module(self, task: TaskInfo, module: L.LightningModule, head: nn.Module | None) -> nn.Module:
        """The model that predicts for the earlier `task` now (`eval.revisit=true`, continual scenario):
        by default the current `module.backbone` under `head`, the `nn.Linear` head `task` ended with
        (kept by the harness; None when that module had no Linear `head`). Override it when the module
        predicts otherwise (several heads, a head that is not a Linear layer): return a module whose
        `forward(x)` gives `task`'s logits. It is evaluated only, never trained, and charged as evaluation."""
        from torch import nn

        from nevisbench.errors import PluginError

        backbone = getattr(module, "backbone", None)
        if head is None or not isinstance(backbone, nn.Module):
            raise PluginError(f"eval.revisit needs the head each task ended with: task {task.key}'s module has no "
                              "`head` that is an nn.Linear, or no `backbone`; keep them as TaskModule does, or "
                              "override Learner.revisit_module")
        return nn.Sequential(backbone, head)

    def task_report(self, task: TaskInfo) -> dict[str, Any]:
        """Facts about how the learner handled `task` (e.g. the structure it learned), JSON-ready;
        the runner writes a non-empty report into the task's results line as `learner_report`."""
        return {}

    def task_module(self, backbone: nn.Module, task: TaskInfo, *, frozen: list[nn.Module] | None = None) -> TaskModule:
        """The default module: `backbone` + a new linear head of `task.num_classes` outputs, with
        `frozen` parts kept without gradients and in eval mode."""
        from torch import nn

        from nevisbench.api.module import TaskModule

        head = nn.Linear(self.feature_dim, task.num_classes)
        return TaskModule(backbone, head, task=task, train=self.context.train, frozen=frozen)


def _positional(method: Any) -> int:
    import inspect

    try:
        params = list(inspect.signature(method).parameters.values())[1:]  # after self
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _verbs() -> set[str]:
    """What a subclass may define: the hooks, `task_module` and the class attributes (`_ATTRIBUTES`)."""
    return {name for name in vars(Learner) if not name.startswith("_")}


def _hooks() -> set[str]:
    """The methods the harness calls (`task_module` is not one: the default `begin_task` calls it)."""
    return {name for name in _verbs() if callable(vars(Learner)[name]) and not isinstance(vars(Learner)[name], type)
            and name not in _ATTRIBUTES and name != "task_module"}


# the upgrade from each earlier API version (what a plugin written for it changes)
UPGRADES = {1: "rename setup(backbone) to prepare(backbone) and build_module(backbone, task) to "
               "begin_task(task, backbone) (it returns the task's LightningModule), then set api_version = 2"}
# class attributes a plugin may set: (check, what it must be)
_ATTRIBUTES: dict[str, tuple[Any, str]] = {
    "api_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), f"an int (api_version = {API_VERSION})"),
    "helpers": (lambda v: isinstance(v, (tuple, list)) and all(isinstance(h, str) for h in v),
                "a tuple of method names, e.g. helpers = (\"my_method\",); () for none"),
    "supports_ddp": (lambda v: isinstance(v, bool), "True or False"),
    "brings_backbone": (lambda v: isinstance(v, bool), "True or False"),
    "backbone_name": (lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "None or a non-empty string"),
    "backbone_families": (lambda v: v is None or (isinstance(v, (tuple, list)) and all(isinstance(f, str) for f in v)),
                          "None or a tuple of backbone family names"),
}
# where a mixin's methods are nobody's business: Python's own classes
_PYTHON_MODULES = ("builtins", "abc", "typing", "collections.abc", "_collections_abc")


def _version_problem(version: Any) -> str | None:
    if version == API_VERSION:
        return None
    if isinstance(version, int) and version < API_VERSION:
        how = UPGRADES.get(version, f"port it to the verbs of version {API_VERSION} and set api_version = {API_VERSION}")
        return (f"is written for learner API version {version}, but this nevisbench has version {API_VERSION}: "
                f"{how} (docs/writing-a-learner.md)")
    return (f"is written for learner API version {version}, but this nevisbench has version {API_VERSION}, an older "
            "one: upgrade nevisbench (pip install -U nevisbench), or install a release of the plugin written for "
            f"version {API_VERSION}")


def check_api(cls: type[Learner]) -> str | None:
    """Why the API would not call what plugin class `cls` defines (one line), or None when it fits:
    a class attribute of the wrong type, an `api_version` other than this nevisbench's, or a public
    method that is neither a verb nor listed in `helpers`, defined by the class, a base class or
    a mixin (anything but Learner and Python's own classes)."""
    for name, (check, what) in _ATTRIBUTES.items():
        value = getattr(cls, name, None)
        if not check(value):
            return f"sets {name} = {value!r}: it must be {what}"
    problem = _version_problem(cls.api_version)
    if problem is not None:
        return problem
    verbs, helpers = _verbs(), set(cls.helpers)
    if _positional(cls.begin_task) < 2:
        return "defines begin_task(task), the API 1 signature; the harness calls begin_task(task, backbone)"
    for klass in cls.__mro__:
        if klass in Learner.__mro__ or klass.__module__ in _PYTHON_MODULES:
            continue
        for name, value in vars(klass).items():
            function = getattr(value, "__func__", value)
            if name.startswith("_") or name in verbs or name in helpers or not callable(function) or isinstance(value, type):
                continue
            where = "" if klass is cls else f" (in {klass.__name__})"
            if name in RETIRED:
                return (f"defines {name}(){where}, which the learner API no longer calls; "
                        f"implement {RETIRED[name]}() instead")
            hooks = ", ".join(sorted(_hooks()))
            return (f"defines {name}(){where}, which is not a hook of the learner API (hooks: {hooks}); "
                    f"the harness would never call it. Rename it _{name} or list it in `helpers`")
    return None
