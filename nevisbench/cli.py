"""`nevisbench` command line: parse, compose the config, call the library. Nothing else."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from nevisbench.errors import NevisbenchError

__all__ = ["main"]

LIST_WHAT = ("learners", "streams", "tasks")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nevisbench", description="Compute-aware continual and transfer learning benchmark.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,list,flops,plot}")
    run = sub.add_parser("run", help="run a learner over a stream", description="Run a learner over a stream. "
                         "Overrides: group=option (learner=, stream=, trainer=, logger=) and dotted key=value.")
    run.add_argument("overrides", nargs="*", help="e.g. learner=finetune train.max_steps=50 out_dir=/tmp/x, or resume=RUN_DIR")
    lst = sub.add_parser("list", help="list learners, streams or tasks")
    lst.add_argument("what", choices=LIST_WHAT)
    lst.add_argument("--stream", default="demo", help="stream whose tasks to list (default: demo)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    flops = sub.add_parser("flops", help="per-image FLOPs of one training step and one evaluation pass",
                           description="Per-image FLOPs (algorithmic and executed) of the configured learner.")
    flops.add_argument("overrides", nargs="*", help="e.g. learner=finetune backbone.name=resnet50 data.image_size=224")
    flops.add_argument("--num-classes", type=int, default=1000, help="head size (default: 1000)")
    flops.add_argument("--json", action="store_true", help="machine-readable output")
    plot = sub.add_parser("plot", help="compute-performance curves of finished runs, one figure")
    plot.add_argument("runs", nargs="+", help="run folders (with summary.json), e.g. runs/*")
    plot.add_argument("--out", default="compute_performance.png", help="output file (.png, .pdf, .svg)")
    plot.add_argument("--x", default="algorithmic", choices=("algorithmic", "executed", "seconds"), help="compute axis")
    return parser


def _flops(args: argparse.Namespace, console: Console) -> None:
    from nevisbench.config import compose

    if args.num_classes < 1:
        raise NevisbenchError(f"Invalid --num-classes {args.num_classes}: it must be >= 1")
    cfg = compose(args.overrides)
    from nevisbench.profile import step_flops
    from nevisbench.report import format_flops

    report = step_flops(cfg, num_classes=args.num_classes)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"FLOPs per image: {report['learner']} on {report['backbone']} at "
                        f"{report['image_size']}px, {report['num_classes']} classes", title_justify="left")
    for column in ("step", "measure", "forward", "backward", "total"):
        table.add_column(column, justify="right" if column not in ("step", "measure") else "left")
    for step in ("train_step", "eval_step"):
        for measure in ("algorithmic", "executed"):
            row = report[step][measure]
            table.add_row(step, measure, *(format_flops(row[k]) for k in ("forward", "backward", "total")))
    console.print(table)


def _list(args: argparse.Namespace, console: Console) -> None:
    from nevisbench.config import group_options

    if args.what == "learners":
        rows = _learner_rows(group_options("learner"))
        columns = ("name", "learner", "description")
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
        rows = [{"key": t.key, "name": t.name, "position": i + 1, "year": t.year, "domain": t.domain,
                 "num_classes": t.num_classes, "multi_label": t.multi_label} for i, t in enumerate(stream.tasks)]
        columns = ("position", "key", "name", "domain", "num_classes", "multi_label")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{args.what}" + (f" of stream '{args.stream}'" if args.what == "tasks" else ""), title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


def _learner_rows(options: list[str]) -> list[dict[str, str]]:
    from nevisbench.config import compose
    from nevisbench.registry import get_learner_class

    rows = []
    for option in options:
        cfg = compose([f"learner={option}"])
        cls = get_learner_class(cfg.learner.name)
        rows.append({"name": option, "learner": cfg.learner.name, "description": _description(option, cls),
                     "config": {k: v for k, v in cfg.learner.items() if k != "name"}})
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    try:
        if args.command == "run":
            from nevisbench.config import compose

            cfg = compose(args.overrides)  # validated before torch is even imported
            from nevisbench.runner import run

            run(cfg, console=console)
        elif args.command == "list":
            _list(args, console)
        elif args.command == "flops":
            _flops(args, console)
        elif args.command == "plot":
            from nevisbench.plot import plot_runs

            out = plot_runs(args.runs, args.out, x=args.x)
            console.print(f"Wrote {out}")
    except NevisbenchError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("[bold red]interrupted[/]: results of finished tasks are kept in the run folder.")
        return 130
    except OSError as exc:  # a full disk, a folder that cannot be written, ...
        where = f" ({exc.filename})" if exc.filename else ""
        errors.print(f"[bold red]error:[/] {exc.strerror or exc}{where}; results written so far are intact.",
                     highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
