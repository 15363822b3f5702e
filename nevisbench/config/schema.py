"""Typed schemas of the run config: the dataclasses hold the types, the YAML under `configs/` the
values a run starts from. A field has a value here only where an option may leave its key out (an
older run's saved config, a group option that does not name it); where the YAML names it too, the
two agree (tests/test_config_defaults.py).

`RootConfig` is the whole run config. A config group with a schema (`stream/`, `trainer/`,
`logger/`, `search/`; `protocol/` is typed by `ProtocolConfig` in `RootConfig`) is a field typed by
its dataclass; the first four are listed in `GROUP_SCHEMAS`; `learner` is typed at
composition by the chosen learner's own `Config` dataclass (it comes from the learner's entry point).
A new group needs a folder of YAML files under `configs/` and a line in `config.yaml`'s defaults
list; a typed one also its dataclass here, added to `RootConfig` and `GROUP_SCHEMAS`. A group
without a schema gets an untyped section automatically (see `root_schema`), and a group whose files
are `# @package _global_` needs no section at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

__all__ = [
    "DEFAULT_X", "PRECISIONS", "X_CHOICES", "GROUP_SCHEMAS", "BackboneConfig", "DataConfig", "TrainConfig",
    "StreamConfig", "TrainerConfig", "LoggerConfig", "BudgetConfig", "EvalConfig", "ProtocolConfig", "SearchConfig", "MeterConfig",
    "RootConfig", "root_schema",
]

# `budget.x`: the compute kinds a run's point sums on its x axis. The papers' axis is training +
# search; best-dev selection spends evaluation compute too, which `+eval` puts on the axis.
X_CHOICES = ("train+search", "train", "train+eval", "train+search+eval")
DEFAULT_X = "train+search"
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


@dataclass
class BackboneConfig:
    name: str = MISSING  # a name of the backbone registry (nevisbench.backbones; `nevisbench list backbones`)
    weights: str = MISSING  # imagenet | none | /local/file.pth | http(s)://url


@dataclass
class DataConfig:
    root: str = MISSING
    image_size: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    augment: bool = MISSING
    min_crop_scale: float = MISSING
    device_share: float = MISSING  # keep task data on the GPU when it fits in this share of free memory


@dataclass
class TrainConfig:
    max_steps: int = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    schedule: str = MISSING
    warmup_steps: int = MISSING
    label_smoothing: float = MISSING
    checkpoint_every_n_steps: int = MISSING  # mid-task checkpoints for resuming (0: off)
    fused: bool | None = None  # fused optimizer kernels; null: on CUDA
    nesterov: bool = False  # Nesterov momentum (sgd)
    decay_norm_and_bias: bool = True  # false: weight decay on conv/linear weights only (dm_nevis's mask)
    warmup_epochs: float = 0.0  # > 0: warmup from rate 0, min(total - 1, epochs x (N // batch + 1)) steps
    final_lr: float = 0.0  # the absolute learning rate the cosine decays to (dm_nevis: 1e-8)


@dataclass
class StreamConfig:
    name: str = MISSING
    tasks: list[str] | None = None
    allow_missing: bool = False  # run the prepared tasks only, warn and record the missing ones


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    precision: str | None = None  # None: bf16-mixed on CUDA, 32-true on CPU
    deterministic: bool = MISSING
    progress_bar: bool = MISSING
    log_every_n_steps: int = MISSING
    channels_last: bool | None = None  # null: on CUDA
    benchmark: bool | None = None  # cudnn.benchmark; null: on CUDA unless deterministic
    compile: bool = MISSING  # torch.compile the task module
    peak_flops: float | None = None  # device peak FLOP/s for MFU; null: known GPUs only
    find_unused_parameters: bool = False  # DDP (devices > 1): for modules with parameters a step leaves unused


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = MISSING
    entity: str | None = None
    group: str | None = None
    mode: str | None = None  # online | offline | None: online when an API key is set


@dataclass
class BudgetConfig:
    flops_per_task: float | None = None  # training FLOPs per task; null: train.max_steps decides
    measure: str = MISSING  # algorithmic | executed: the compute that budgets and curves count
    milestones: int = MISSING  # anytime dev evaluations per task, log-spaced in training compute
    first_milestone: float = MISSING  # the first milestone, as a fraction of the planned compute
    auc_min_flops: float = MISSING  # the fixed log-compute range of the AUC score
    auc_max_flops: float = MISSING
    x: str = DEFAULT_X  # the compute the run's point sums: train | train+search | train+eval | train+search+eval


@dataclass
class EvalConfig:
    # continual scenario: after each task, score every earlier task again with its own head (the
    # accuracy matrix, forgetting); charged as evaluation. Nevis scores each task once: off there.
    revisit: bool = False


@dataclass
class ProtocolConfig:
    name: str = MISSING
    selection: str = MISSING  # best_dev | last: which model of a task is scored on dev_test and test
    flip: str = MISSING  # all | not_ocr: which tasks get random horizontal flips
    crop_fallback: str = MISSING  # center | clamp: a random crop that does not fit the image
    batch_size: str = "fixed"  # fixed: data.batch_size | nevis_rule: min(512, max(16, 2^floor(log2(0.0025 N)))) per task
    validate_every_n_steps: int = 0  # > 0: best-dev selection validates every n steps (step 0, n, 2n, ... and the
    # last), as dm_nevis; 0: it reads the anytime milestones


@dataclass
class SearchConfig:
    """Per-task hyperparameter search, owned by the runner (docs/search.md)."""

    name: str = MISSING  # none | nevis_cheap | nevis | custom
    trials: int = MISSING  # trials per task (1 with search=none)
    sampler: str = MISSING  # grid | random | tpe (Optuna samplers, seeded per task: see seed_with_run_seed)
    space: dict[str, Any] = field(default_factory=dict)  # train.* / learner.* key -> loguniform(a,b) | uniform(a,b) | choice(a,...)
    parallel: int = 1  # trials of a task at once, one per GPU or CPU slot (grid/random samplers)
    pruner: str = "none"  # none | successive_halving | hyperband (Optuna; the budget milestones are the rungs)
    seed_with_run_seed: bool = True  # the sampler's seed: seed + task index (true) | the task index alone (false,
    # dm_nevis: task i draws the same trials under every run seed)


@dataclass
class MeterConfig:
    """The FLOP meter's policy (docs/flop-meter.md)."""

    count: str = "auto"  # auto | every_step | cached (auto: every step for third-party plugins)
    audit_every: int = 32  # cached: a step whose cost is cached is counted again every N-th step
    engine: str = "auto"  # auto | native | python: what counts ops (auto: the native counter where every step is counted)
    time_audit: str = "auto"  # auto | always | off: audit each task's CPU time against its counted work (auto: plugins)
    unexplained_max: float = 1.5  # flag a task whose real compute is more than this x what its counted work explains
    unexplained_min_seconds: float = 1.0  # ... and whose unexplained CPU seconds pass this


@dataclass
class RootConfig:
    learner: Any = MISSING  # typed by the chosen learner's own Config dataclass
    stream: StreamConfig = field(default_factory=StreamConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    meter: MeterConfig = field(default_factory=MeterConfig)
    scenario: str = MISSING
    seed: int = MISSING
    out_dir: str = MISSING
    run_name: str | None = None
    on_failure: str = MISSING  # stop | skip: what the stream does after a task fails (NaN loss)
    resume: str | None = None  # a run folder to continue


# Config groups whose options are typed by a schema (the field of the same name in RootConfig).
GROUP_SCHEMAS: dict[str, type] = {"stream": StreamConfig, "trainer": TrainerConfig, "logger": LoggerConfig,
                                   "search": SearchConfig}


def root_schema(*, learner: type | None = None, untyped_groups: tuple[str, ...] = ()) -> DictConfig:
    """The schema node the composition starts from.

    Args:
        learner: the chosen learner's `Config` dataclass; None leaves `learner` untyped (used only
            to find out which learner the options pick).
        untyped_groups: groups without a schema; each gets a section that takes any keys.
    """
    known = {f.name for f in fields(RootConfig)}
    extra = [(group, Any, field(default=None)) for group in untyped_groups if group not in known]
    cls = make_dataclass("RootConfig", extra, bases=(RootConfig,)) if extra else RootConfig
    node = OmegaConf.structured(cls)
    if learner is not None:
        node.learner = OmegaConf.structured(learner)
    OmegaConf.set_struct(node.search.space, False)  # search.space.<any train./learner. key>=...
    return node
