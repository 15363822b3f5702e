"""`nevisbench sweep`: expand the grid, validate every job, record the sweep, launch, compare.

Order matters: the grid's size is checked before it is expanded (`sweep.max_jobs`); every job's
config is composed as `nevisbench run` composes it (`config.batch.ConfigBatch`: one Hydra
composition per choice of group options, each job's overrides applied to a copy) before anything
is written or started, so one bad combination stops the sweep with nothing launched. Running the
same command again (or `sweep resume=DIR`) reopens the sweep: finished runs are skipped,
interrupted ones continue with `resume=`. One sweep process at a time holds a sweep folder.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape

from nevisbench import layout
from nevisbench.analysis import COLUMNS, collect, compare_rows, plot_comparison, print_table, render_table, to_csv, to_markdown
from nevisbench.compute.hardware import world_size
from nevisbench.config.batch import ConfigBatch
from nevisbench.config.keys import override_literal
from nevisbench.config.resume import compose_resume
from nevisbench.errors import ConfigError, NevisbenchError
from nevisbench.run.store.loggers import wandb_mode
from nevisbench.run.store.results import atomic_write_text
from nevisbench.sweep.grid import Grid, job_name, load_experiment, max_jobs, parse_sweep
from nevisbench.sweep.jobs import Job, SweepFolder
from nevisbench.sweep.launchers import check_job_devices, job_states, launch, load_launcher
from nevisbench.sweep.progress import jobs_table

__all__ = ["run_sweep", "sweep_status", "write_comparison", "validate_jobs"]

SWEEPS_ROOT = Path("sweeps")


def _signature(grid: Grid) -> str:
    return hashlib.sha1(json.dumps([list(j) for j in grid.jobs]).encode()).hexdigest()[:16]


def _matching_sweep(signature: str) -> Path | None:
    """The latest sweep under sweeps/ made by the same command (same jobs), to continue it."""
    if not SWEEPS_ROOT.is_dir():
        return None
    for path in sorted(SWEEPS_ROOT.iterdir(), reverse=True):
        try:
            if (path / SweepFolder.JOBS).is_file() and SweepFolder.open(path).info.get("signature") == signature:
                return path
        except NevisbenchError:
            continue
    return None


def _with_group(overrides: tuple[str, ...], group: str) -> list[str]:
    if any(o.startswith("logger.group=") for o in overrides):
        return list(overrides)
    return [*overrides, f"logger.group={override_literal(group)}"]


def validate_jobs(jobs: list[Job], runs_dir: Path, console: Console) -> Any:
    """Compose every job's config (as `nevisbench run` would); the first bad one is a one-line
    error naming the job, its overrides and the key. Returns the first job's config."""
    if len(jobs) > 20:
        console.print(f"Checking the config of {len(jobs)} jobs...", highlight=False)
    batch, first = ConfigBatch(), None
    out_dir = f"out_dir={override_literal(str(runs_dir))}"
    for job in jobs:
        try:
            cfg = batch.compose([*job.overrides, f"run_name={override_literal(job.name)}", out_dir])
        except NevisbenchError as exc:
            shown = " ".join(o for o in job.overrides if not o.startswith("logger.group="))
            raise ConfigError(f"Sweep job {job.index} ({shown}): {str(exc).rstrip('.')}. Nothing was launched.") from None
        job.devices, job.accelerator = world_size(cfg.trainer), str(cfg.trainer.accelerator)
        first = first if first is not None else cfg
    return first


def _grid_values(grid: Grid) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for job_overrides in grid.jobs:
        for item in job_overrides:
            key, _, value = item.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return values


def _reopen(path: Path, signature: str | None, console: Console) -> SweepFolder:
    """An existing sweep, held by this process (the folder's lock before its records are read)."""
    held = SweepFolder.hold(path)
    folder = SweepFolder.open(path)
    folder._held = held
    if signature is not None and folder.info.get("signature") != signature:
        raise ConfigError(f"sweep_dir '{path}' holds a different sweep ({folder.info.get('command')}); choose "
                          "another sweep_dir, or continue it with: nevisbench sweep resume=" + str(path))
    if folder.recreated:
        names = ", ".join(j.name for j in folder.jobs if j.index in folder.recreated)
        console.print(f"[yellow]{path / SweepFolder.JOBS} lacked {len(folder.recreated)} job(s) of the grid in "
                      f"sweep.yaml: recreated ({escape(names[:300])}); their run folders say what is left to do[/]",
                      soft_wrap=True)
        _refuse_foreign_runs(folder, [j for j in folder.jobs if j.index in folder.recreated])
    return folder


def _refuse_foreign_runs(folder: SweepFolder, jobs: list[Job]) -> None:
    """A recreated job's run folder counts for the job only if it ran the job's overrides: after
    sweep.yaml was edited (a fixed override changed) and the job lines it no longer matched were
    deleted, the old runs counted as the new grid's jobs, silently."""
    for job in jobs:
        run_dir = folder.run_dir(job)
        if not (run_dir / layout.CONFIG).is_file():
            continue
        try:
            compose_resume(str(run_dir), list(job.overrides))
        except ConfigError as exc:
            detail = str(exc).partition("with a different config: ")[2].partition(". Start a new run")[0] or str(exc)
            raise ConfigError(f"{run_dir} was run with other settings than sweep.yaml's grid now gives job {job.name} "
                              f"({detail}): sweep.yaml was edited after the sweep ran. Restore sweep.yaml, or move that "
                              "run folder away to run the job again; nothing was launched") from None


def _new_sweep(overrides: list[str], grid: Grid, console: Console) -> tuple[SweepFolder, Any]:
    signature = _signature(grid)
    path = Path(grid.sweep["sweep_dir"]) if "sweep_dir" in grid.sweep else _matching_sweep(signature)
    if path is not None and (path / SweepFolder.JOBS).is_file():
        folder = _reopen(path, signature, console)
        console.print(f"Continuing sweep [cyan]{escape(str(path))}[/] (same jobs); pass sweep_dir=DIR for a fresh one.")
        return folder, load_launcher(grid.sweep, saved=folder.info.get("launcher"))
    path = path or SWEEPS_ROOT / f"{datetime.now():%Y%m%d-%H%M%S}"
    launcher = load_launcher(grid.sweep)
    name = path.resolve().name
    jobs = [Job(index=i, name=job_name(i, overrides_, grid.swept), overrides=_with_group(overrides_, name))
            for i, overrides_ in enumerate(grid.jobs)]
    if len({j.name for j in jobs}) != len(jobs):
        raise ConfigError("Two jobs of the grid would share a run folder name; the grid repeats a combination")
    cfg = validate_jobs(jobs, path / layout.SWEEP_RUNS, console)  # before anything is written
    check_job_devices(jobs, launcher)
    if "sweep_dir" not in grid.sweep:  # the same command started meanwhile (validation takes seconds) made one
        path = _matching_sweep(signature) or path
    held = SweepFolder.hold(path)  # before a record is written: a second sweep process stops here
    if (path / SweepFolder.JOBS).is_file():  # another process created it meanwhile, and has let it go
        return _reopen(path, signature, console), launcher
    info = {
        "command": "nevisbench sweep " + " ".join(overrides),
        "created": datetime.now().isoformat(timespec="seconds"),
        "experiment": grid.sweep.get("experiment"),
        "grid": _grid_values(grid),
        "swept": list(grid.swept),
        "jobs": len(jobs),
        "max_jobs": max_jobs(overrides),
        "group": override_literal(name),
        "launcher": OmegaConf.to_container(launcher),
        "wandb": OmegaConf.to_container(cfg.logger) if cfg.logger.name == "wandb" else None,
        "signature": signature,
    }
    folder = SweepFolder.create(path, info, jobs, held=held)
    console.print(f"Sweep [cyan]{escape(str(path))}[/]: {len(jobs)} job(s) over {', '.join(grid.swept) or 'no swept key'}; "
                  f"launcher={launcher.name}")
    return folder, launcher


def run_sweep(overrides: list[str], console: Console) -> int:
    """The whole `nevisbench sweep` command; returns the exit status (1 when a job failed)."""
    presets = [o.partition("=")[2] for o in overrides if o.startswith("experiment=")]
    items = load_experiment(presets[-1]) if presets else []
    grid = parse_sweep([*items, *overrides])
    if "resume" in grid.sweep:
        if grid.jobs != ((),) or presets:
            raise ConfigError("sweep resume=DIR continues that sweep as recorded: give it no run overrides "
                              "(launcher and launcher.* are allowed)")
        path = Path(grid.sweep["resume"])
        SweepFolder.open(path)  # a sweep folder at all, before its lock file is made
        folder = _reopen(path, None, console)
        launcher = load_launcher(grid.sweep, saved=folder.info.get("launcher"))
        console.print(f"Resuming sweep [cyan]{escape(str(folder.path))}[/]")
    else:
        folder, launcher = _new_sweep(overrides, grid, console)
    folder.settle()
    todo = [job for job in folder.jobs if job.state != "done"]
    skipped = len(folder.jobs) - len(todo)
    if skipped:
        console.print(f"{skipped} job(s) already finished: skipped.")
    launch(folder, todo, launcher, console)
    folder.reload()
    folder.settle()
    counts = folder.counts()
    if counts["done"]:
        write_comparison(folder, console)
        from nevisbench.analysis.site.command import write_report

        write_report(folder.path, console)  # the site beside comparison.*: <sweep>/report/index.html
    if counts["failed"] or counts["pending"] or counts["running"]:
        console.print(f"[yellow]{counts['failed']} job(s) failed, {counts['pending'] + counts['running']} not "
                      f"finished[/]; logs in {escape(str(folder.path / layout.SWEEP_LOGS))}. Run the same command again "
                      f"(or `nevisbench sweep resume={folder.path}`) to retry them; finished runs are kept.", soft_wrap=True)
        return 1
    return 0


def write_comparison(folder: SweepFolder, console: Console) -> list[Any]:
    """The sweep's comparison: table on the terminal, comparison.{csv,md,png} in the sweep folder,
    and a `wandb.Table` in the sweep's W&B group when its runs log to W&B."""
    points = collect([folder.run_dir(j) for j in folder.jobs if j.state == "done"])  # this grid's runs, no stray folder
    rows = compare_rows(points)
    print_table(console, render_table(rows, title=f"sweep {folder.name}"))
    table, markdown = layout.comparison_file(folder.path, "csv"), layout.comparison_file(folder.path, "md")
    atomic_write_text(table, to_csv(rows))
    atomic_write_text(markdown, to_markdown(rows))
    figure = plot_comparison(points, layout.comparison_file(folder.path, "png"))
    console.print(f"Comparison: {table}, {markdown}, {figure}")
    if folder.info.get("wandb"):
        log_comparison_wandb(folder, rows, figure, folder.info["wandb"], console)
    return rows


def log_comparison_wandb(folder: SweepFolder, rows: list[Any], figure: Path, logger: dict[str, Any],
                         console: Console) -> None:
    """One W&B run (job_type "comparison") in the sweep's group, holding the table and the figure.
    Like every tracker in nevisbench, a failure warns and never fails the sweep."""
    try:
        import wandb

        mode = wandb_mode(logger.get("mode"))
        run = wandb.init(project=logger.get("project"), entity=logger.get("entity"), group=logger.get("group") or folder.name,
                         name=f"{folder.name}-comparison", job_type="comparison", dir=str(folder.path), mode=mode,
                         reinit="create_new", config={"sweep": folder.info.get("command")})
        data = [[getattr(r, c) for c in COLUMNS] for r in rows]
        run.log({"comparison": wandb.Table(columns=list(COLUMNS), data=data), "comparison_figure": wandb.Image(str(figure))})
        run.finish()
        console.print(f"W&B: comparison table logged to group '{logger.get('group') or folder.name}' ({mode})")
    except Exception as exc:  # a tracker must never fail the sweep
        console.print(f"[yellow]W&B comparison logging failed ({exc!r}); the local comparison files stand.[/]",
                      soft_wrap=True)


def sweep_status(path: str, console: Console) -> None:
    """The jobs table; for a submitit sweep, each unfinished job's state asked of the engine
    (`sacct` on SLURM), so a job still queued or running on the cluster shows as such."""
    folder = SweepFolder.open(Path(path))  # read only (it creates nothing): a live sweep may be writing it
    saved = folder.info.get("launcher") or {}
    if folder.recreated:
        console.print(f"[yellow]{escape(str(folder.path / SweepFolder.JOBS))} lacks {len(folder.recreated)} job(s) of "
                      "the grid in sweep.yaml: shown as pending; the next run of the sweep recreates them[/]", soft_wrap=True)
    engines, warning = job_states(folder, saved)
    if warning:
        console.print(f"[yellow]{escape(warning)}[/]", soft_wrap=True)
    console.print(jobs_table(folder, engines=engines))
    flying = [j for j in folder.jobs if j.index in engines and engines[j.index].in_flight]
    if flying:
        console.print(f"{len(flying)} job(s) still in flight (queued or running on the engine): "
                      f"{', '.join(j.name for j in flying)}. Running the same command again watches them and "
                      "submits them no second time.", highlight=False, soft_wrap=True, markup=False)
    if any(j.state == "running" and j not in flying for j in folder.jobs):
        console.print("stale = the sweep that ran it stopped; `nevisbench sweep resume=" + str(folder.path) +
                      "` continues it.", highlight=False)


def sweep_command(overrides: list[str], console: Console) -> int:
    if overrides[:1] == ["status"]:
        if len(overrides) != 2:
            raise ConfigError("Usage: nevisbench sweep status SWEEP_DIR (one sweep folder)")
        sweep_status(overrides[1], console)
        return 0
    return run_sweep(overrides, console)


