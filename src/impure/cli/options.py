"""The options the commands share, spelled and explained once: `--purifier`, `--strength`, `--noise-t`, `--device`,
`--dtype`, `--seed`, `-o/--output`, `--no-progress`, `--classifier-weights` and `--eps`; old spellings as deprecated
aliases. Usage errors (bad values included) go through argparse, so they exit with status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from impure import formatting

__all__ = ["add_classifier_weights", "add_device", "add_dtype", "add_eps", "add_no_progress", "add_output",
           "add_purifier_options", "add_seed", "check_parsed", "eps_argument", "eps_text", "join_dash_values",
           "load_purifier", "noise_t_argument", "strength_argument"]

# Usual ℓ∞ budgets of CIFAR-10 and ImageNet evaluations; a larger one is allowed, with a warning.
USUAL_EPS = "2/255 to 16/255"
LARGEST_USUAL_EPS = 32 / 255
DEVICE_HELP = "auto, cuda, cuda:N, mps or cpu (default auto)"
DTYPE_HELP = "precision of the models: auto is bf16 (or fp16) on a GPU and fp32 on the CPU (default {default})"
SEED_HELP = "random seed of the purifier's noise and the attacks' starts, for a repeatable run (default 0)"
NO_PROGRESS_HELP = "hide the progress bars"
STRENGTH_HELP = ("purification strength, relative: scales the noise timesteps of a noise-mode purifier (default 1 = "
                 "the purifier's own setting; lower keeps more detail, higher removes more)")
NOISE_T_HELP = ("purify at these image/feature noise timesteps instead of --strength, e.g. 80/120 (absolute; "
                "default: the purifier's own)")
PURIFIER_HELP = ("bundled name (impure/cifar10, impure/cifar10-robust, impure/cifar10-s), folder or Hub id of the "
                 "purifier")
CLASSIFIER_WEIGHTS_HELP = "weights file (.safetensors) for a classifier named by its architecture"
# Options whose values may start with "-" (so that "--noise-t -10/20" reaches the value's own check).
_VALUE_OPTIONS = ("--noise-t", "--eps", "--strength", "--alpha")


def eps_argument(text: str) -> float:
    """`--eps`: a fraction ("8/255") or a number in (0, 1]; above 32/255 it warns with the usual range."""
    try:
        value = formatting.parse_eps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if value > LARGEST_USUAL_EPS:
        print(f"impure: warning: eps {text} is {value * 255:.3g}/255, above 32/255; ℓ∞ attacks on CIFAR-10 and "
              f"ImageNet usually use {USUAL_EPS}", file=sys.stderr)
    return value


def noise_t_argument(text: str) -> tuple[int, int]:
    """`--noise-t`: image/feature timesteps "80/120", whole and non-negative."""
    try:
        return formatting.parse_noise_t(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def strength_argument(text: str) -> float:
    """`--strength`: a positive number."""
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {text!r}") from error
    if not value > 0:
        raise argparse.ArgumentTypeError(f"strength must be positive, got {text}")
    return value


def join_dash_values(argv: Sequence[str]) -> list[str]:
    """["--noise-t", "-10/20"] -> ["--noise-t=-10/20"]: argparse would take "-10/20" for an option and say
    "expected one argument"; joined, the value reaches its own check and its clear message."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        item = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if item in _VALUE_OPTIONS and following[:1] == "-" and following[1:2] in set("0123456789."):
            joined.append(f"{item}={following}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


class _Deprecated(argparse.Action):
    """An old spelling of an option: works for one more release, with a warning naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"impure: warning: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    parser.add_argument(old, dest=dest, action=_Deprecated, replacement=new, help=argparse.SUPPRESS, **kwargs)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_dtype(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--dtype", default=default, choices=("auto", "fp32", "bf16", "fp16"),
                        help=DTYPE_HELP.format(default=default))


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help=SEED_HELP)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def add_output(parser: argparse.ArgumentParser, what: str, *, required: bool = False, default: Path | None = None,
               metavar: str = "PATH", old: str | None = None) -> None:
    """-o/--output: where the command writes `what`; `old` is a deprecated spelling kept for one release."""
    parser.add_argument("-o", "--output", type=Path, required=required, default=default, metavar=metavar,
                        help=f"where to write: {what}")
    if old:
        _deprecated(parser, old, "-o/--output", "output", type=Path, metavar=metavar)


def add_classifier_weights(parser: argparse.ArgumentParser, old: str | None = None) -> None:
    parser.add_argument("--classifier-weights", type=Path, metavar="FILE", help=CLASSIFIER_WEIGHTS_HELP)
    if old:
        _deprecated(parser, old, "--classifier-weights", "classifier_weights", type=Path, metavar="FILE")


def eps_text(text: str) -> str:
    """`--eps` checked as `eps_argument` checks it, kept as written (for settings recorded as text)."""
    eps_argument(text)
    return text


def add_eps(parser: argparse.ArgumentParser, default: float | None = 8 / 255, as_text: bool = False) -> None:
    """--eps, parsed to a float (or, `as_text`, checked and kept as written)."""
    shown = "" if default is None else f"; default {formatting.format_eps(default)}"
    parser.add_argument("--eps", type=eps_text if as_text else eps_argument, default=default,
                        help=f"ℓ∞ budget on the [0, 1] scale, e.g. 8/255 (usually {USUAL_EPS}){shown}")


def add_purifier_options(parser: argparse.ArgumentParser, default: str | None, baselines: bool = False) -> None:
    """--purifier (with `default`; None: no purifier unless given; `baselines`: a baseline name too), --strength
    and --noise-t; `check_parsed` refuses both of the last two."""
    shown = f" (default {default})" if default else " (default: none)"
    also = "; or a baseline: jpegQ, bitsB, medianK (e.g. jpeg75, bits4, median3)" if baselines else ""
    parser.add_argument("--purifier", default=default, help=PURIFIER_HELP + also + shown)
    parser.add_argument("--strength", type=strength_argument, help=STRENGTH_HELP)
    parser.add_argument("--noise-t", type=noise_t_argument, metavar="I/F", help=NOISE_T_HELP)
    parser.set_defaults(command_parser=parser)


def load_purifier(args: argparse.Namespace, **load: Any) -> Any:
    """The `--purifier` at `--strength` or at `--noise-t`, by `impure.defences.load_defence(args.purifier,
    **load)` (None for no defence)."""
    from impure.defences import load_defence

    return load_defence(args.purifier, strength=args.strength, noise_t=args.noise_t, **load)


def check_parsed(args: argparse.Namespace) -> None:
    """What one option cannot check alone, as usage errors (exit status 2): --strength and --noise-t together."""
    from impure.defences.loading import check_strength_or_noise_t

    parser = getattr(args, "command_parser", None)
    if parser is None:
        return
    try:
        check_strength_or_noise_t(args.strength, args.noise_t, names=("--strength", "--noise-t"))
    except ValueError as error:
        parser.error(str(error))
