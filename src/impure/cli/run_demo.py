"""`impure demo`: attack a CIFAR-10 classifier, purify, print the accuracies and write a PNG grid; offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import DEFAULT_CLASSIFIER, DEFAULT_PURIFIER
from . import options

DEFAULT_OUTPUT = Path("impure_demo.png")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="offline walk-through: attack a CIFAR-10 classifier with PGD, purify, report, picture",
        description="Classify CIFAR-10 images, attack the classifier with PGD (grey-box: the attack sees the "
                    "classifier only), purify the clean and the adversarial images, classify them again, print "
                    "the four accuracies and the perturbation before and after purification, and write a PNG "
                    "grid. Without INPUT it uses 20 CIFAR-10 test images shipped with impure. Runs offline on "
                    "the bundled weights.",
    )
    add = parser.add_argument
    add("input", nargs="?", type=Path, metavar="INPUT",
        help="a folder with one subfolder per CIFAR-10 class (airplane, automobile, ...), or an .npz with "
             "`images` (uint8 N x 32 x 32 x 3) and `labels`; default: the shipped samples")
    options.add_purifier_options(parser, DEFAULT_PURIFIER)
    add("--classifier", default=DEFAULT_CLASSIFIER,
        help=f"bundled name, a .safetensors file named after its architecture (e.g. cifar10_resnet56.safetensors), "
             f"torchvision:NAME, timm:NAME, module:callable or a TorchScript file (default {DEFAULT_CLASSIFIER})")
    options.add_eps(parser)
    add("--steps", type=int, default=10, help="PGD iterations (default 10; step size eps/4)")
    add("--limit", type=int, help="use only the first N images")
    add("--batch-size", type=int, default=100, help="images per batch (default 100)")
    options.add_seed(parser)
    options.add_device(parser)
    options.add_output(parser, f"the PNG grid, this file (default {DEFAULT_OUTPUT}, which a rerun replaces)",
                       metavar="PNG")
    options.add_no_progress(parser)  # accepted as by every command; the demo shows no progress bar
    add("--force", action="store_true", help="overwrite a file named with -o if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import GRID_ROWS, run_demo

    named = args.output is not None
    output = args.output if named else DEFAULT_OUTPUT  # the demo's own default output is its to replace
    if output.suffix.lower() != ".png":
        raise ValueError(f"--output must be a .png file, got {output}")
    if named and output.exists() and not args.force:
        raise ValueError(f"{output} exists; pass --force to overwrite it, or choose another file with -o")
    print(f"impure demo: PGD ({args.steps} steps) on {args.classifier}, purified by {args.purifier}", flush=True)
    result = run_demo(args.input, purifier=args.purifier, classifier=args.classifier, strength=args.strength,
                      noise_t=args.noise_t,
                      eps=args.eps, steps=args.steps, limit=args.limit, seed=args.seed, device=args.device,
                      batch_size=args.batch_size)
    print(result.report())
    path = result.save_grid(output, overwrite=True)
    print(f"wrote {path}: rows {', '.join(GRID_ROWS)} (the perturbation amplified)")
    return 0
