"""`impure convert-reference`: turn a reference-implementation checkpoint into a `save_pretrained` folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-reference",
        help="convert a checkpoint of the paper's reference code into config.json + model.safetensors",
        description="Convert a reference IMPure checkpoint (.safetensors, or a torch.save file with a 'model' "
                    "entry, read weights-only) into a folder loadable with Purifier.from_pretrained.",
    )
    parser.add_argument("checkpoint", type=Path, help="the reference checkpoint")
    parser.add_argument("output", type=Path, help="folder to write (created; must be empty or absent)")
    parser.add_argument("--mask-mode", choices=("noise", "token"), help="override the inferred mask mode")
    parser.add_argument("--encoder-heads", type=int, help="encoder attention heads, if no preset matches")
    parser.add_argument("--decoder-heads", type=int, help="decoder attention heads, if no preset matches")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import Purifier

    if args.output.exists() and any(args.output.iterdir()) and not args.force:
        raise ValueError(f"{args.output} is not empty; pass --force to write into it")
    overrides = {name: value for name, value in (("mask_mode", args.mask_mode), ("encoder_heads", args.encoder_heads),
                                                 ("decoder_heads", args.decoder_heads)) if value is not None}
    purifier = Purifier.from_reference(args.checkpoint, **overrides)
    purifier.save_pretrained(args.output)
    count = sum(p.numel() for p in purifier.parameters())
    print(f"wrote {args.output} ({count / 1e6:.2f} M parameters, mask_mode={purifier.config.mask_mode})")
    return 0
