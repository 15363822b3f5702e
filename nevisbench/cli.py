"""`nevisbench` command line: parse, compose the config, call the library; besides, it builds the
`list` and `flops` tables (in `list`, an option's first YAML comment describes it) and the
`--json` outputs. Imports of the library sit inside the commands: `nevisbench --help` loads no torch (the module
imports in 0.1 s; the runner's imports took 4-11 s on the 2-core machine)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
from typing import Any, cast

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nevisbench import layout
from nevisbench.errors import NevisbenchError
from nevisbench.io.jsonout import dumps

__all__ = ["main"]

LIST_WHAT = ("learners", "streams", "tasks", "backbones")


# the largest head `nevisbench flops` builds (a 2048 x 100k linear layer is already 0.8 GB)
MAX_PROBE_CLASSES = 100_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nevisbench", description="Compute-aware continual and transfer learning benchmark.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,sweep,compare,list,flops,plot,report,wandb-workspace,data}")
    run = sub.add_parser("run", help="run a learner over a stream", description="Run a learner over a stream. "
                         "Overrides: group=option (learner=, stream=, trainer=, logger=, protocol=, search=) and dotted key=value.")
    run.add_argument("overrides", nargs="*", help="e.g. learner=finetune train.max_steps=50 out_dir=/tmp/x, or resume=RUN_DIR")
    sweep = sub.add_parser("sweep", help="many runs from one command: a grid of overrides, launched locally or on SLURM",
                           description="Expand a grid of overrides (key=a,b,c, range(...), logspace(a,b,n); "
                           "experiment=PRESET) into runs, validate them all, launch them (launcher=local|slurm, "
                           "launcher.*=...), then compare them. `sweep status DIR` shows a sweep's jobs; running the "
                           "same command again, or `sweep resume=DIR`, finishes an interrupted sweep.")
    sweep.add_argument("overrides", nargs="*", help="e.g. learner=finetune,conv_prune seed=0,1 launcher.jobs=2 "
                       "sweep_dir=sweeps/x, or: status DIR, or: resume=DIR")
    _add_analysis_commands(sub)
    lst = sub.add_parser("list", help="list learners, streams, tasks or backbones")
    lst.add_argument("what", choices=LIST_WHAT)
    lst.add_argument("--stream", default="demo", help="stream whose tasks to list (default: demo)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    flops = sub.add_parser("flops", help="per-image FLOPs of one training step and one evaluation pass",
                           description="Per-image FLOPs (algorithmic and executed) of the configured learner.")
    flops.add_argument("overrides", nargs="*", help="e.g. learner=finetune backbone.name=resnet50 data.image_size=224")
    flops.add_argument("--num-classes", type=int, default=1000, help="head size (default: 1000)")
    flops.add_argument("--json", action="store_true", help="machine-readable output")
    data = sub.add_parser("data", help="prepare SHORT tasks from their original files; show what is ready",
                          description="Prepare the SHORT tasks' packed cache, or show its status.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{prepare,status}")
    prep = data_sub.add_parser("prepare", help="pack tasks into the cache the runner reads",
                               description="Pack tasks from their publishers' files into the cache under --root. "
                                           "TARGETS are task keys or streams (short, short_objects, short_ood, short_heldout).")
    prep.add_argument("targets", nargs="+", metavar="TARGET", help="task keys or stream names, e.g. mnist cifar10, or short")
    prep.add_argument("--root", default=None, help="cache folder (default: data.root of the config, ~/nevis-data)")
    prep.add_argument("--source-dir", default=None, help="folder with the downloaded files (one sub-folder per task key "
                      "when preparing several tasks)")
    prep.add_argument("--download", action="store_true", help="fetch the files from the catalogue's URLs (resumable)")
    prep.add_argument("--mirror", default=None, help="with --download: fetch <mirror>/<task key>/<file name> instead")
    prep.add_argument("--no-verify", action="store_true", help="skip source checksums (re-packed mirrors, test fixtures)")
    prep.add_argument("--size", type=int, default=64, help="stored image size in pixels (default: 64, the Nevis protocol)")
    prep.add_argument("--jobs", type=int, default=None, help="tasks packed in parallel (default: number of CPUs)")
    prep.add_argument("--force", action="store_true", help="prepare again tasks that are already ready")
    stat = data_sub.add_parser(
        "status", help="per task: ready, missing or corrupt", description="Per task: ready / missing / corrupt, with sizes."
    )
    stat.add_argument("targets", nargs="*", metavar="TARGET", help="task keys or streams (default: short and short_heldout)")
    stat.add_argument("--root", default=None, help="cache folder (default: data.root of the config, ~/nevis-data)")
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.add_argument("--quick", action="store_true", help="check file sizes only, do not re-hash the files")
    return parser


def _add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """`compare` and `plot`: the tables and figures of nevisbench.analysis."""
    compare = sub.add_parser(
        "compare",
        help="mean and std over seeds of finished runs, per configuration and budget",
        description="Compare finished runs (run folders, sweep folders or folders of runs): "
        "final error (mean, std over seeds) and compute per learner configuration and budget.",
    )
    compare.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, sweep folders or folders of runs")
    compare.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    compare.add_argument("--markdown", default=None, metavar="FILE", help="also write the table as Markdown")
    compare.add_argument("--baseline", default=None, metavar="NAME",
                         help="add each row's compute as a multiple of this configuration's (or learner's) in the "
                              "same study, scenario, budget and backbone, e.g. --baseline finetune")
    compare.add_argument("--out", default=None, metavar="FIG", help="error vs compute figure (.png, .pdf, .svg)")
    compare.add_argument(
        "--x",
        default=None,
        choices=("algorithmic", "executed", "seconds"),
        help="compute axis of the figure (default: each run's budget.measure)",
    )
    plot = sub.add_parser(
        "plot",
        help="compute-performance curves of finished runs, one figure",
        description="The figure of `compare --out` alone: per study, each configuration's mean "
        "error over seeds (band: +- std) against compute, through its budgets, and the Pareto front.",
    )
    plot.add_argument("runs", nargs="+", help="run folders, sweep folders or folders of runs, e.g. runs/*")
    plot.add_argument("--out", default="compute_performance.png", help="output file (.png, .pdf, .svg)")
    plot.add_argument(
        "--x", default=None, choices=("algorithmic", "executed", "seconds"), help="compute axis (default: each run's budget.measure)"
    )
    report = sub.add_parser("report", help="a study as a static web site (figures, tables, per-run pages), opens from disk",
                            description="Write a self-contained web site of finished runs (run folders, sweep folders "
                            "or folders of runs): open SITE/index.html in a browser, no server or network needed.")
    report.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, sweep folders or folders of runs")
    report.add_argument("--out", required=True, metavar="SITE", help="the site's folder (new, empty, or an earlier report)")
    workspace = sub.add_parser("wandb-workspace", help="a W&B workspace for a project's runs: the compute-performance "
                               "scatter by learner, per-task and anytime panels (offline: built, validated and shown)")
    workspace.add_argument("--entity", required=True, help="W&B entity (user or team)")
    workspace.add_argument("--project", required=True, help="W&B project the runs log to (logger.project)")
    workspace.add_argument("--name", default="nevisbench: compute-performance", help="the workspace's name")
    workspace.add_argument("--dry-run", action="store_true", help="build and validate only, never contact W&B")
    plot.add_argument(
        "--anytime",
        action="store_true",
        help="add a panel of anytime curves (mean dev error of mid-schedule models vs training compute) per study of transfer runs",
    )


def _default_root() -> str:
    from nevisbench.config import compose

    return str(compose([]).data.root)


def _data(args: argparse.Namespace, console: Console) -> None:
    from pathlib import Path

    root = Path(args.root or _default_root()).expanduser()
    if args.data_command == "prepare":
        from nevisbench.tasks.prepare import prepare

        if args.jobs is not None and args.jobs < 1:
            raise NevisbenchError(f"Invalid --jobs {args.jobs}: it must be >= 1")
        from nevisbench.io.net import fail_fast

        with fail_fast() if args.download else contextlib.nullcontext():  # offline: an error in seconds, not minutes
            prepare(
                args.targets,
                root,
                source_dir=Path(args.source_dir).expanduser() if args.source_dir else None,
                download=args.download,
                verify=not args.no_verify,
                size=args.size,
                jobs=args.jobs,
                force=args.force,
                mirror=args.mirror,
                console=console,
            )
        return
    from nevisbench.tasks.prepare import status_rows, status_table

    rows = status_rows(root, args.targets or None, verify=not args.quick)
    if args.json:
        print(dumps(rows))
        return
    _print_table(console, status_table(rows, root))
    ready = sum(r["status"] == "ready" for r in rows)
    console.print(f"{ready} of {len(rows)} ready.")


def _flops(args: argparse.Namespace, console: Console) -> None:
    from nevisbench.config import compose

    if not 1 <= args.num_classes <= MAX_PROBE_CLASSES:
        raise NevisbenchError(f"Invalid --num-classes {args.num_classes}: it must be in 1..{MAX_PROBE_CLASSES}")
    cfg = compose(args.overrides)
    from nevisbench.run.probe import step_flops
    from nevisbench.run.store.report import format_flops

    report = step_flops(cfg, num_classes=args.num_classes)
    if args.json:
        print(dumps(report))
        return
    table = Table(
        title=f"FLOPs per image: {report['learner']} on {report['backbone']['name']} at "
        f"{report['image_size']}px, {report['num_classes']} classes",
        title_justify="left",
    )
    for column in ("step", "measure", "forward", "backward", "total"):
        table.add_column(column, justify="right" if column not in ("step", "measure") else "left")
    # steady_step: the second task's training step (after end_task on the first: replay, penalties)
    for step in ("train_step", "steady_step", "eval_step"):
        for measure in ("algorithmic", "executed"):
            row = report[step][measure]
            table.add_row(step, measure, *(format_flops(row[k]) for k in ("forward", "backward", "total")))
    _print_table(console, table)


def _list(args: argparse.Namespace, console: Console) -> None:
    from nevisbench.config import group_options

    if args.what == "learners":
        rows: list[dict[str, Any]] = _learner_rows(group_options("learner"))
        columns: tuple[str, ...] = ("name", "learner", "status", "description")
    elif args.what == "backbones":
        from nevisbench.backbones import backbone_spec, list_backbones

        rows = [
            {
                "name": n,
                "family": s.family,
                "source": s.source,
                "pretrained": s.pretrained,
                "image_size": f">= {s.min_image_size}" + (f", multiple of {s.image_multiple}" if s.image_multiple > 1 else ""),
                "description": s.description,
            }
            for n, s in ((n, backbone_spec(n)) for n in list_backbones())
        ]
        columns = ("name", "family", "source", "pretrained", "image_size", "description")
    elif args.what == "streams":
        from nevisbench.tasks import get_stream

        rows = []
        for option in group_options("stream"):
            from nevisbench.config import compose

            stream = get_stream(compose([f"stream={option}"]).stream.name)
            rows.append({"name": option, "num_tasks": len(stream.tasks), "description": stream.description})
        columns = ("name", "num_tasks", "description")
    else:
        from nevisbench.tasks import get_stream

        stream = get_stream(args.stream)
        rows = [
            {
                "key": t.key,
                "name": t.name,
                "position": t.position or i + 1,
                "year": t.year,
                "domain": t.domain,
                "num_classes": t.num_classes,
                "multi_label": t.multi_label,
            }
            for i, t in enumerate(stream.tasks)
        ]
        columns = ("position", "key", "name", "domain", "num_classes", "multi_label")
    if args.json:
        print(dumps(rows))
        return
    table = Table(title=f"{args.what}" + (f" of stream '{args.stream}'" if args.what == "tasks" else ""), title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    _print_table(console, table)


def _print_table(console: Console, table: Table) -> None:
    """Every table of the CLI keeps its columns on a pipe (`nevisbench list backbones | cat`)."""
    from nevisbench.analysis import print_table

    print_table(console, table)


def _learner_rows(options: list[str]) -> list[dict[str, Any]]:
    """One row per learner option, each with its status: a plugin that fails to load is listed as
    `broken` with the reason, and never hides the others."""
    from omegaconf import OmegaConf

    from nevisbench.config import compose
    from nevisbench.registry import get_learner_class

    rows: list[dict[str, Any]] = []
    for option in options:
        try:
            cfg = compose([f"learner={option}"])
            cls = get_learner_class(cfg.learner.name)
        except NevisbenchError as exc:
            rows.append({"name": option, "learner": option, "status": "broken", "description": str(exc), "reason": str(exc),
                         "config": None})
            continue
        rows.append(
            {
                "name": option,
                "learner": cfg.learner.name,
                "status": "ok",
                "description": _description(option, cls),
                "reason": None,
                "config": {k: v for k, v in cast(dict, OmegaConf.to_container(cfg.learner)).items() if k != "name"},
            }
        )
    return rows


def _description(option: str, cls: type) -> str:
    """The first comment line of the option's YAML file, else the first line of the class doc."""
    from nevisbench.config import config_dir

    path = config_dir() / "learner" / f"{option}.yaml"
    if path.is_file():
        first = path.read_text().splitlines()[0]
        if first.startswith("#"):
            return first.lstrip("# ").strip()
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def _sweep_takes_sigint(command: str) -> None:
    """A sweep, or a sweep job's run, started from the background of a non-interactive shell
    (nohup, `cmd &`, some CI runners), inherits SIGINT ignored: `kill -INT` of the sweep, or the
    sweep's Ctrl-C to its jobs (a preemption's stop, `stop_process`), never reached it, and it ran
    on to its end. Both take the KeyboardInterrupt handler back."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        from nevisbench.run.store.run_folder import EXACT_RUN_DIR_ENV

        if command == "sweep" or os.environ.get(EXACT_RUN_DIR_ENV):
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _sweep_takes_sigint(args.command)
    console = Console()
    # a DDP rank > 0 (started by Lightning re-running this command, told its run folder by DDP_RUN_DIR_ENV)
    # leaves the talking to rank 0
    follower = os.environ.get(layout.DDP_RUN_DIR_ENV) is not None and os.environ.get("LOCAL_RANK", "0") != "0"
    errors = Console(stderr=True, quiet=follower)
    try:
        if args.command == "run":
            from nevisbench.config import compose

            cfg = compose(args.overrides)  # validated before torch is even imported
            from nevisbench.run.runner import run

            run(cfg, console=console)
        elif args.command == "sweep":
            from nevisbench.sweep import sweep_command

            return sweep_command(args.overrides, console)
        elif args.command == "compare":
            from nevisbench.analysis.commands import compare_command

            compare_command(args, console)
        elif args.command == "list":
            _list(args, console)
        elif args.command == "flops":
            _flops(args, console)
        elif args.command == "data":
            _data(args, console)
        elif args.command == "plot":
            from nevisbench.analysis.commands import plot_command

            plot_command(args, console)
        elif args.command in ("report", "wandb-workspace"):
            from nevisbench.analysis.site.command import share_command

            share_command(args, console)
    except NevisbenchError as exc:
        if os.environ.get("NEVISBENCH_TRACEBACK") == "1" and exc.__cause__ is not None:  # a plugin's failure, in full
            errors.print(escape("".join(traceback.format_exception(exc.__cause__))), highlight=False, soft_wrap=True)
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.command == "data":
            errors.print("[bold red]interrupted[/]: prepared tasks are kept; run the same command again to prepare the rest.")
        elif args.command == "sweep":
            errors.print("[bold red]interrupted[/]: finished runs are kept; run the same command again to finish the sweep.")
        else:
            errors.print("[bold red]interrupted[/]: results of finished tasks are kept in the run folder.")
        return 130
    except OSError as exc:  # a full disk, a folder that cannot be written, ...
        where = f" ({exc.filename})" if exc.filename else ""
        errors.print(
            f"[bold red]error:[/] {escape(str(exc.strerror or exc))}{escape(where)}; results written so far are intact.",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
