"""`impure evaluate`: robust accuracy of a classifier behind a defence, printed and saved as reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options

_REPORTS = ("result.json", "result.md", "grid.png", "chart.png")
PARTIAL = "partial-results"  # per-batch records of an unfinished run, beside the reports; removed at the end


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    # Light modules only: `impure --help` loads neither the model (timm) nor torchvision.
    from impure.attacks.eot import DEFAULT_EOT_SAMPLES
    from impure.attacks.registry import DEFAULT_ATTACKS, list_attacks

    parser = subparsers.add_parser(
        "evaluate",
        help="robust accuracy of a classifier behind a defence: table, JSON, plots",
        description="Attack CLASSIFIER on DATA under grey-box (attacks made on the bare classifier, then "
        "purified) and white-box (attacks through the defence, EOT over its noise) threat models, print a "
        "Markdown table, and write result.json and result.md into -o/--output. A purifier given by name runs in "
        "fp32 by default, for exact gradients in the white-box attacks; bf16 / fp16 speed up grey-box runs on a GPU. "
        "Under torchrun each process evaluates its share of the batches, and rank 0 writes the same reports as one "
        "process would; with -o/--output, finished batches are kept in DIR/partial-results until the end, and "
        "--resume continues an interrupted run from them.",
    )
    add = parser.add_argument
    add("--classifier", required=True,
        help="impure/cifar10-resnet20-heldout or impure/cifar10-resnet20 (bundled, no weights needed); "
             "cifar_resnet20, cifar_resnet56 or squeezenet1_0_caffe (with --classifier-weights) or their "
             ".safetensors file; torchvision:NAME; timm:NAME; module:callable; or a TorchScript file")
    options.add_classifier_weights(parser)
    add("--data", required=True,
        help="an .npz with images/labels, an image folder (one subfolder per class), or a torchvision "
             "dataset name (cifar10, cifar100, svhn, stl10)")
    options.add_purifier_options(parser, default=None, baselines=True)
    add("--attacks", type=_names, default=list(DEFAULT_ATTACKS),
        help=f"comma-separated, from {', '.join(list_attacks())} (default: {','.join(DEFAULT_ATTACKS)})")
    add("--threat", default="both", choices=("grey-box", "white-box", "bpda", "both", "all"),
        help="threat model; both = grey-box and white-box, all adds bpda (default: both)")
    options.add_eps(parser)
    add("--steps", type=int, help="iterations of each iterative attack (default: 10; DeepFool 50)")
    add("--eot-samples", type=int,
        help=f"EOT samples per white-box step for a stochastic defence (default {DEFAULT_EOT_SAMPLES})")
    add("--batch-size", type=int, default=100, help="images per batch (default 100)")
    add("--limit", type=int, help="evaluate only the first N images")
    add("--image-size", type=int, help="resize image-folder images to this side")
    add("--data-root", type=Path, help="where torchvision datasets are stored")
    options.add_device(parser)
    options.add_dtype(parser, default="fp32")  # fp32: exact gradients for the white-box attacks
    options.add_seed(parser)
    options.add_output(parser, "result.json and result.md (and the plots) into this folder", metavar="DIR",
                       old="--out")
    add("--grid", action="store_true", help="also write grid.png: clean, adversarial, purified, residual")
    add("--chart", action="store_true", help="also write chart.png (needs matplotlib)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--force", action="store_true", help="replace reports already in -o/--output")
    resume.add_argument("--resume", action="store_true",
                        help=f"continue an interrupted run from the finished batches in -o/--output's {PARTIAL} "
                             "(same command, any number of processes); without it they are discarded")
    options.add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import sys

    from impure._util.distributed import init_distributed
    from impure.device import select_device
    from impure.evaluation import evaluate

    if (args.grid or args.chart) and args.output is None:
        raise ValueError("--grid and --chart write files: give -o/--output DIR")
    if args.resume and args.output is None:
        raise ValueError(f"--resume continues from the {PARTIAL} folder in -o/--output DIR: give it")
    if args.output is not None and not args.force:
        existing = [name for name in _REPORTS if (args.output / name).exists()]
        if existing:
            raise ValueError(f"{args.output} already holds {', '.join(existing)}; pass --force to replace them")
    if args.chart:  # fail before the long run, not after it
        from importlib.util import find_spec

        if find_spec("matplotlib") is None:
            raise ValueError('--chart needs matplotlib: `pip install "impure[plots]"`, or leave out --chart')
    context = init_distributed(select_device(args.device).type)
    try:
        partial = None if args.output is None else args.output / PARTIAL
        if partial is not None and not args.resume and context.is_main:
            shutil.rmtree(partial, ignore_errors=True)
        context.barrier()
        result = evaluate(
            args.classifier, args.data, args.purifier, attacks=args.attacks, threat=args.threat, eps=args.eps,
            steps=args.steps, batch_size=args.batch_size, device=args.device, eot_samples=args.eot_samples,
            seed=args.seed, limit=args.limit, image_size=args.image_size, data_root=args.data_root,
            classifier_weights=args.classifier_weights, keep_examples=8 if args.grid else 0, dtype=args.dtype,
            progress=not args.no_progress, partial_dir=partial, strength=args.strength, noise_t=args.noise_t,
        )  # fmt: skip
    except BaseException:  # interrupted or failed: say where the finished batches are and how to go on
        if partial is not None and context.is_main and any(partial.rglob("*.pt")):
            print(f"impure evaluate: the finished batches are kept in {partial}; run the same command with "
                  "--resume to continue from them", file=sys.stderr)
        raise
    else:
        if context.is_main:
            print(result.to_markdown())
            if args.output is not None:
                paths = result.save(args.output, grid=args.grid, chart=args.chart)
                shutil.rmtree(partial, ignore_errors=True)
                print("wrote " + ", ".join(str(path) for path in paths.values()))
        context.barrier()
    finally:
        context.close()
    return 0
