"""`llmos pretrain` and `llmos runs ...`: thin argparse front ends over this package."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _with_overrides(parser: argparse.ArgumentParser) -> None:
    """Let `parser` accept any `--section.field VALUE` (or `--section.field=VALUE`) pair.

    The pairs are taken out before argparse parses the rest and land in `args.overrides`; the
    config loader then rejects unknown keys by name. Listing every field as an argparse option
    instead would import torch (for the model's fields) just to build `llmos --help`.
    """
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        args = list(sys.argv[1:] if args is None else args)
        rest: list[str] = []
        overrides: dict[str, str] = {}
        i = 0
        while i < len(args):
            arg = args[i]
            key = arg[2:].split("=", 1)[0]
            if arg.startswith("--") and "." in key and not key.startswith("."):
                if "=" in arg:
                    overrides[key] = arg.split("=", 1)[1]
                elif i + 1 < len(args):
                    overrides[key] = args[i + 1]
                    i += 1
                else:
                    parser.error(f"config override {arg} needs a value")
                i += 1
                continue
            rest.append(arg)
            i += 1
        namespace, extras = parse(rest, namespace)
        namespace.overrides = {**getattr(namespace, "overrides", {}), **overrides}
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def cmd_pretrain(args: argparse.Namespace) -> int:
    from llmos.train.config import load_config
    from llmos.train.pretraining import find_resume, pretrain, resume_config
    from llmos.train.runs import RunStore

    overrides = args.overrides
    if args.resume:
        # A resumed run keeps the config it started with (that is what makes it exact); only
        # fields given on the command line (say a longer --train.max_iters) change.
        store = RunStore()
        name = overrides.get("name") or (load_config(args.config).name if args.config else None)
        run_dir = find_resume(args.resume, store, name, args.out)
        cfg = resume_config(run_dir, overrides)
        store.close()
        pretrain(cfg, resume=str(run_dir), name=args.name, profile=args.profile)
    else:
        cfg = load_config(args.config, overrides)
        pretrain(cfg, out_dir=args.out, name=args.name, profile=args.profile)
    return 0


def _fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def cmd_runs_list(args: argparse.Namespace) -> int:
    from llmos.train.runs import RunStore

    store = RunStore()
    runs = store.list()
    if not runs:
        print("no runs yet; start one with `llmos pretrain`", file=sys.stderr)
    for run in runs:
        steps = store.metrics(run.id, "train/loss")
        val = store.metrics(run.id, "val/loss")
        print(f"{run.id:44} {run.status:11} step {steps[-1][0] + 1 if steps else 0:>7}  "
              f"val {_fmt(val[-1][1] if val else None):>7}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(run.created))}")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from llmos.train.runs import RunStore

    store = RunStore()
    run = store.get(args.run)
    print(f"run      {run.id} ({run.kind}, {run.status})")
    print(f"folder   {run.out_dir}")
    model = run.config.get("model", {})
    train = run.config.get("train", {})
    print(f"model    {', '.join(f'{k}={v}' for k, v in model.items())}")
    print(f"train    batch {train.get('batch_size')} x {train.get('gradient_accumulation_steps')} accum, "
          f"lr {train.get('learning_rate')}, {train.get('max_iters')} iters")
    for key in store.keys(run.id):
        values = store.metrics(run.id, key)
        last_step, last = values[-1]
        best = min(v for _, v in values)
        print(f"{key:18} last {last:.4f} (step {last_step})  min {best:.4f}  points {len(values)}")
    for key, value in run.summary.items():
        print(f"{key:18} {value}")
    return 0


def cmd_runs_plot(args: argparse.Namespace) -> int:
    from llmos.train.plot import plot_runs

    out = plot_runs(args.runs, args.out, smooth=args.smooth)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `llmos pretrain` and `llmos runs ...`."""
    p = subparsers.add_parser(
        "pretrain", help="train a model from scratch (config file + --section.field overrides; torchrun-ready)",
        epilog="Every config field can be overridden as --SECTION.FIELD VALUE, e.g. --model.n_layer 4 "
               "--train.learning_rate 3e-3 --data.sources tinyshakespeare.txt. Sections: model (a preset "
               "and/or model fields), data, train, eval, checkpoint, system. Shipped configs: "
               "shakespeare-char (nanoGPT's baby GPT), shakespeare-char-fast. Under `torchrun "
               "--nproc_per_node N` the same command trains with DDP.")
    p.add_argument("--config", help="a shipped config name or a YAML file")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                   help="continue a run exactly from its latest checkpoint (run id, name or folder; "
                        "default: the latest run of this config)")
    p.add_argument("--out", help="run folder (default: $LLMOS_HOME/runs/RUN_ID)")
    p.add_argument("--name", help="also save the final model into the library as NAME[:TAG]")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="record N training steps with torch.profiler (chrome trace in the run folder)")
    p.set_defaults(func=cmd_pretrain, overrides={})
    _with_overrides(p)

    runs = subparsers.add_parser("runs", help="list, show and plot training runs")
    verbs = runs.add_subparsers(dest="runs_command", metavar="VERB", required=True)
    s = verbs.add_parser("list", help="all runs with their status, step and val loss")
    s.set_defaults(func=cmd_runs_list)
    s = verbs.add_parser("show", help="one run's config, metrics and summary")
    s.add_argument("run", help="run id (or a unique prefix, or a run name)")
    s.set_defaults(func=cmd_runs_show)
    s = verbs.add_parser("plot", help="plot train and val loss of one or more runs")
    s.add_argument("runs", nargs="+", metavar="RUN")
    s.add_argument("--out", type=Path, default=Path("loss.png"))
    s.add_argument("--smooth", type=int, default=20, help="moving-average window for the train loss")
    s.set_defaults(func=cmd_runs_plot)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (`python -m llmos.train pretrain ...`, e.g. under torchrun)."""
    from llmos.cli import main as llmos_main

    return llmos_main(sys.argv[1:] if argv is None else argv)
