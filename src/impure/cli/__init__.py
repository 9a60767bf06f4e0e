"""The `impure` command line: one sub-command per module in this package (`impure app` is serve_app.py,
`impure demo` run_demo.py and `impure export` export_model.py, so that no module shares a name with the library's
impure.app, impure.demo and impure.export)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`, which adds its sub-command and sets `func`.
# Modules are imported on demand so that `impure --help` stays fast.
_COMMAND_MODULES = ("convert", "purify", "train", "make_adversarial", "evaluate", "export_model", "run_demo",
                    "serve_app")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `impure` command with every sub-command registered."""
    from impure import __version__

    parser = argparse.ArgumentParser(
        prog="impure", description="IMPure adversarial purification: purify, evaluate, train."
    )
    parser.add_argument("--version", action="version", version=f"impure {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `impure` console script; returns the process exit status."""
    from .options import check_parsed, join_dash_values

    parser = build_parser()
    args = parser.parse_args(join_dash_values(sys.argv[1:] if argv is None else list(argv)))
    check_parsed(args)
    if args.command is None:
        parser.print_help()
        return 2
    from impure.device import tune_cpu_allocator

    tune_cpu_allocator()  # a CLI process is one job: keep its large CPU buffers for reuse
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as error:  # user mistakes (bad values, missing files); bugs keep their traceback
        print(f"impure {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
