"""`impure export`: write a purifier, or a purifier with its classifier, as ONNX or a torch.export program."""

from __future__ import annotations

import argparse

from ..demo import DEFAULT_PURIFIER
from . import options

_SUFFIXES = {".onnx": "onnx", ".pt2": "program"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a purifier (and classifier) as ONNX or a torch.export program, for serving",
        description="Export the purifier, or with --classifier the whole defended classifier (logits), as an ONNX "
                    "file (.onnx; ONNX Runtime, TensorRT) or a torch.export program (.pt2). A noise-mode purifier "
                    "takes its standard-normal noise as the inputs image_noise and feature_noise; a JSON file beside "
                    "the export lists every input's shape. The batch size is free; the image size is fixed. See "
                    "docs/deploy.md.",
    )
    options.add_output(parser, "the export, this file (.onnx or .pt2), and its inputs in FILE.json", required=True,
                       metavar="FILE")
    options.add_purifier_options(parser, DEFAULT_PURIFIER)
    parser.add_argument("--classifier",
                        help="also export this classifier behind the purifier (as `impure evaluate` names it): the "
                             "file then returns logits")
    options.add_classifier_weights(parser)
    parser.add_argument("--format", choices=("onnx", "program"),
                        help="onnx or program (torch.export); default from the file's suffix")
    parser.add_argument("--image-size", type=int, help="side of the images it takes (default: the purifier's)")
    parser.add_argument("--static-batch", type=int, metavar="N", help="fix the batch size at N (default: free)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..classifier import PurifiedClassifier
    from ..classifiers.lookup import resolve_classifier
    from ..export import export

    fmt = args.format or _SUFFIXES.get(args.output.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format from {args.output.name}: name it .onnx or .pt2, or pass --format")
    if args.output.exists() and not args.force:
        raise ValueError(f"{args.output} exists; pass --force to replace it")
    purifier = model = options.load_purifier(args)
    if args.classifier:
        classifier, _ = resolve_classifier(args.classifier, args.classifier_weights)
        model = PurifiedClassifier(purifier, classifier.eval()).eval()
    path = export(model, args.output, fmt, batch_size=args.static_batch or 1, image_size=args.image_size,
                  dynamic_batch=args.static_batch is None)
    print(f"wrote {path} ({fmt}) and {path.name}.json")
    return 0

