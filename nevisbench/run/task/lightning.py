"""Device policy and the Lightning Trainer factory: which device and precision a run uses, how its
batches are served, and the Trainer every task trains under."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig

from nevisbench.compute.hardware import fits_on_device
from nevisbench.errors import ConfigError
from nevisbench.run.store.results import harness_write
from nevisbench.run.task.compiling import CompiledStepCallback, compile_module
from nevisbench.run.task.distributed import device_index, local_rank, world_size
from nevisbench.run.task.progress_bar import TaskProgressBar, eval_phase
from nevisbench.tasks.loader import BatchLoader, TaskData

__all__ = ["quiet_lightning", "resolve_precision", "training_device", "use_channels_last", "make_loaders", "make_trainer",
           "compile_module", "eval_phase"]


def quiet_lightning() -> None:
    """Silence Lightning's info logs and the warnings that do not apply to the harness."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*module.s. in eval mode at the start of training.*")  # frozen parts
    # Lightning warns on every run of a machine that merely has SLURM installed; the harness never
    # needs `srun` (a sweep's SLURM job is one task, and DDP uses LightningEnvironment, not SLURM's)
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


def resolve_precision(cfg: DictConfig) -> str:
    """`trainer.precision=null` means bf16-mixed on CUDA (fp16-mixed without bf16), fp32 on CPU."""
    if cfg.trainer.precision:
        return str(cfg.trainer.precision)
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def training_device(cfg: DictConfig) -> torch.device:
    """The device this process trains on (batches are built there directly); under DDP, the
    device of this process's rank."""
    accelerator = cfg.trainer.accelerator
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        if world_size(cfg.trainer) > 1 or not isinstance(cfg.trainer.devices, int):
            return torch.device("cuda", device_index(cfg.trainer))
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is available; use cpu or auto")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


def use_channels_last(cfg: DictConfig, device: torch.device) -> bool:
    return cfg.trainer.channels_last if cfg.trainer.channels_last is not None else device.type == "cuda"


def make_loaders(data: TaskData, cfg: DictConfig, device: torch.device, seed: int) -> dict[str, BatchLoader]:
    """A loader per split (train, dev, test, and dev_test where the task has one); the task's data
    lives on the device when it fits. The protocol decides the crop fallback and whether every task
    is flipped (Nevis) or OCR tasks are not (fast). Under DDP the train loader serves this rank's
    slice of each global batch (`data.batch_size` is the global batch)."""
    protocol = cfg.protocol
    splits = {name: split for name, split in (("train", data.train), ("dev", data.dev), ("dev_test", data.dev_test),
                                              ("test", data.test)) if split is not None}
    nbytes = sum(s.images.numel() + s.labels.numel() * 8 for s in splits.values())
    common = dict(image_size=cfg.data.image_size, device=device, seed=seed,
                  hflip=True if protocol.flip == "all" else data.hflip,
                  resident=fits_on_device(nbytes, device, cfg.data.device_share),
                  channels_last=use_channels_last(cfg, device))
    loaders = {"train": BatchLoader(splits.pop("train"), batch_size=cfg.data.batch_size, train=True, augment=cfg.data.augment,
                                    min_crop_scale=cfg.data.min_crop_scale,
                                    crop_fallback=protocol.crop_fallback,
                                    shard=(local_rank(cfg.trainer), world_size(cfg.trainer)), **common)}
    for name, split in splits.items():
        loaders[name] = BatchLoader(split, batch_size=cfg.data.eval_batch_size, train=False, **common)
    return loaders


def _progress_bar() -> L.Callback:
    """The task's bar: planned steps, evaluation and compilation as phases (`run/task/progress_bar.py`)."""
    return TaskProgressBar(refresh_rate=4)


def make_trainer(cfg: DictConfig, *, precision: str, device: torch.device, steps_per_epoch: int,
                 budgeted: bool, callbacks: list[L.Callback], logger: Any, root_dir: str) -> L.Trainer:
    """The Trainer of one task. With a FLOP budget the step count is planned by the schedule
    callback from the first step's counted cost, so the Trainer starts unbounded."""
    max_steps = cfg.train.max_steps
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        **_strategy(cfg, device),
        precision=precision,  # type: ignore[arg-type]  # a Literal in Lightning; checked with the config
        max_steps=-1 if budgeted else max_steps,
        max_epochs=-1 if budgeted else math.ceil(max_steps / steps_per_epoch),
        deterministic=cfg.trainer.deterministic,
        benchmark=cfg.trainer.benchmark if cfg.trainer.benchmark is not None else (device.type == "cuda" and not cfg.trainer.deterministic),
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=min(cfg.trainer.log_every_n_steps, max_steps),
        logger=logger,
        callbacks=[*callbacks, *([CompiledStepCallback()] if cfg.trainer.compile else []),
                   *([_progress_bar()] if cfg.trainer.progress_bar else [])],
        default_root_dir=root_dir,
    )
    if trainer.strategy.root_device != device:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices} selects {trainer.strategy.root_device} but this "
                          f"process builds its batches on {device}; name the devices as a count or a list of indices")
    return trainer


class _HarnessCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, as a harness write (`harness_write`): a full disk while the
    mid-task checkpoint is written names that file and removes it, and is never the learner's failure."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        name = Path(path).name  # the callback writes `.<name>.tmp`, renamed into place after: name the checkpoint
        final = Path(path).with_name(name[1:-4]) if name.startswith(".") and name.endswith(".tmp") else Path(path)
        with harness_write(final, temporary=Path(path)):
            super().save_checkpoint(checkpoint, path, storage_options)


def _strategy(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """One device: Lightning's default. More: DDP on this node, launched by Lightning re-running the
    command (so every rank runs the same stream; see `run/task/distributed.py`), also inside a SLURM job
    of one task (a sweep job), with the loader already sharded by rank."""
    if world_size(cfg.trainer) == 1:
        return {"plugins": [_HarnessCheckpointIO()]}
    return {"strategy": DDPStrategy(process_group_backend="nccl" if device.type == "cuda" else "gloo",
                                    find_unused_parameters=cfg.trainer.find_unused_parameters,
                                    cluster_environment=LightningEnvironment(), checkpoint_io=_HarnessCheckpointIO()),
            "use_distributed_sampler": False}
