"""`impure train CONFIG`: pre-train or fine-tune a purifier from a TOML/YAML config."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pre-train or fine-tune a purifier from a config file",
        description="Train an IMPure purifier as CONFIG (.toml/.yaml) describes. Checkpoints go to the "
                    "config's output_dir; --resume continues an interrupted run exactly. For several "
                    "processes/GPUs run `torchrun --nproc_per_node=N -m impure train CONFIG`.",
    )
    parser.add_argument("config", type=Path, help="the training config (see configs/ and docs/training.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set optim.steps=100 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint.pt")
    parser.add_argument("--stop-after", type=int, metavar="STEP", help="stop (checkpointed) at this step")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop (with a checkpoint) after this many minutes; --resume continues")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from impure.training import Trainer, load_config

    config = load_config(args.config, args.overrides)
    limit = None if args.time_limit is None else args.time_limit * 60
    result = Trainer(config).fit(resume=args.resume, stop_after=args.stop_after, time_limit=limit)
    if result["model_dir"] is not None:
        print(f"finished {result['step']} steps; model saved to {result['model_dir']}")
    elif not result["finished"]:
        print(f"stopped at step {result['step']} of {config.optim.steps}; continue with --resume")
    return 0
