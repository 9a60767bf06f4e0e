"""Robust accuracy of the shared CIFAR-10 ResNets behind no defence, each baseline and (optionally) a
purifier, under grey-box and white-box ℓ∞ attacks at ε 8/255 on ../shared/data/cifar10/test_dev.npz.

    python benchmarks/robustness.py [--purifier impure/cifar10-s] [--limit 200] [--attacks pgd,fgsm]
        [--classifiers cifar_resnet20,cifar_resnet56] [--defences none,jpeg75,bits4,median3]
        [--threat both] [--steps 10] [--eot-samples 8] [--device auto] [--out DIR]

Prints one Markdown table (a row per classifier, defence and threat model) and writes it, with the
JSON of every run, into --out (default benchmarks/results/robustness).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

from impure.evaluation import DEFAULT_ATTACKS, evaluate, summary_table
from impure.evaluation.report import atomic_write

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = {"cifar_resnet20": "cifar10_resnet20.safetensors", "cifar_resnet56": "cifar10_resnet56.safetensors"}
BASELINES = ("none", "jpeg75", "bits4", "median3")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data and model folder")
    parser.add_argument("--purifier", help="a purifier name or folder (Purifier.from_pretrained) to add")
    parser.add_argument("--defences", type=_names, default=list(BASELINES), help="comma-separated baselines")
    parser.add_argument("--classifiers", type=_names, default=list(WEIGHTS), help="comma-separated")
    parser.add_argument("--attacks", type=_names, default=list(DEFAULT_ATTACKS), help="comma-separated")
    parser.add_argument("--threat", default="both", help="grey-box, white-box, bpda, both or all")
    parser.add_argument("--eps", type=lambda s: float(Fraction(s)), default=8 / 255, help="e.g. 8/255")
    parser.add_argument("--limit", type=int, default=200, help="images from test_dev.npz (default 200)")
    parser.add_argument("--steps", type=int, help="iterations of each iterative attack (default per attack)")
    parser.add_argument("--eot-samples", type=int, help="EOT samples for a stochastic purifier")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "robustness")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.shared / "data" / "cifar10" / "test_dev.npz"
    if not data.is_file():
        print(f"the shared data is missing ({data}); pass --shared DIR", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [name for name in args.classifiers if name not in WEIGHTS]
    if unknown:
        print(f"unknown classifier(s) {unknown}; choose from {', '.join(WEIGHTS)}", file=sys.stderr)
        return 2
    defences = args.defences + ([args.purifier] if args.purifier else [])
    results = []
    start = time.perf_counter()
    for classifier in args.classifiers:
        grey_box = {}  # adversarial examples made on the bare classifier, shared by every defence
        for defence in defences:
            print(f"== {classifier} + {defence}", file=sys.stderr)
            weights = args.shared / "models" / WEIGHTS[classifier]
            results.append(evaluate(
                classifier, data, defence, attacks=args.attacks, threat=args.threat, eps=args.eps,
                steps=args.steps, batch_size=args.batch_size, device=args.device,
                eot_samples=args.eot_samples, seed=args.seed, limit=args.limit, classifier_weights=weights,
                adversarial_cache=grey_box,
            ))  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    first = results[0]
    header = (
        f"Robust accuracy (%) on the first {first.num_images} images of test_dev.npz, ℓ∞ ε = "
        f"{args.eps * 255:.3g}/255, device {first.device}, seed {args.seed}, {minutes:.1f} min in all. "
        f"Attack settings: {json.dumps(first.settings['attacks'])}.\n\n"
    )
    table = header + summary_table(results)
    print(table)
    atomic_write(args.out / "robustness.md", table)
    atomic_write(args.out / "robustness.json", json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    print(f"wrote {args.out / 'robustness.md'} and robustness.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
