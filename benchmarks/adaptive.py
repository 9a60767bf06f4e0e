"""The adaptive-attack protocol (`impure.evaluation.adaptive_evaluation`) on purifiers in front of a shared
CIFAR-10 classifier, on ../shared/data/cifar10/test_dev.npz:

    python benchmarks/adaptive.py --purifier impure/cifar10 --purifier impure/cifar10-robust \
        [--classifier cifar_resnet56] [--start 250] [--limit 64] [--convergence-limit 32] [--eot-samples 4] \
        [--resubmissions 10] [--pgd-steps 20] [--apgd-steps 50] [--threads 2] \
        [--out benchmarks/results/adaptive-cifar10]

Per purifier: grey-box and white-box EOT-PGD-20 and APGD-CE-50 (exact gradients through the purifier, EOT
over its noise), the fraction of images that survive --resubmissions more purification draws, white-box
PGD at ε = 32/255 (must fall to ~0), the convergence of white-box PGD in steps (10/20/50/100) and EOT draws
(1/4/8) on the first --convergence-limit images, and the sanity checks in words. Writes, per purifier,
<out>/<label>/adaptive.{json,md} and convergence.png, and <out>/summary.md: the purifiers side by side (with
those measured into --out by earlier runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import DATA, SHARED, WEIGHTS, names, positive_int

from impure._util.atomic import atomic_write
from impure.data import load_npz
from impure.defences import load_defence
from impure.evaluation import AdaptiveReport, adaptive_evaluation
from impure.formatting import percent


def _counts(text: str) -> tuple[int, ...]:
    return tuple(positive_int(item) for item in names(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purifier", action="append", required=True, metavar="NAME_OR_DIR",
                        help="a purifier name or folder; repeat for several")
    parser.add_argument("--label", action="append", help="labels of the purifiers, in order (default: names)")
    parser.add_argument("--classifier", default="cifar_resnet56", choices=sorted(WEIGHTS))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--start", type=int, default=250, help="first test_dev image (default 250: the report split)")
    parser.add_argument("--limit", type=positive_int, default=64, help="images of the main evaluation")
    parser.add_argument("--convergence-limit", type=positive_int, default=32,
                        help="images of the ε = 32/255 run and the convergence curves")
    parser.add_argument("--attacks", type=names, default=["pgd", "apgd-ce"])
    parser.add_argument("--pgd-steps", type=positive_int, default=20)
    parser.add_argument("--apgd-steps", type=positive_int, default=50)
    parser.add_argument("--convergence-steps", type=_counts, default=(10, 20, 50, 100), help="e.g. 10,20,50,100")
    parser.add_argument("--convergence-eot", type=_counts, default=(1, 4, 8), help="e.g. 1,4,8")
    parser.add_argument("--no-curves", action="store_true",
                        help="skip the convergence curves (keep the main run and the ε = 32/255 check)")
    parser.add_argument("--eot-samples", type=positive_int, default=4)
    parser.add_argument("--resubmissions", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=positive_int)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "adaptive-cifar10")
    return parser.parse_args(argv)  # fmt: skip


def summary(reports: dict[str, AdaptiveReport], classifier: str, start: int) -> str:
    """The purifiers side by side: clean, grey-box and white-box per attack, every-draw, checks."""
    first = next(iter(reports.values())).main
    attacks = list(dict.fromkeys(e.attack for r in reports.values() for e in r.main.attacks))
    header = ["purifier", "clean", *(f"{a} {t}" for a in attacks for t in ("grey-box", "white-box")),
              *(f"{a} white-box, every draw" for a in attacks), "sanity checks"]
    lines = [f"# Adaptive evaluation: {classifier} (never used in training) behind each purifier", "",
             f"test_dev images {start}-{start + first.num_images - 1}; ℓ∞ ε = 8/255; white-box: exact gradients "
             f"through the purifier with EOT over {first.eot_samples} draws; 'every draw': the image survives "
             f"{1 + first.resubmissions} independent purifications of the same adversarial image. Accuracies in %.",
             "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for label, report in reports.items():
        by_key = {(e.attack, e.threat): e for e in report.main.attacks}
        cells = [label, percent(report.main.defended_accuracy)]
        cells += [percent(by_key[a, t].robust_accuracy) for a in attacks for t in ("grey-box", "white-box")]
        cells += ["—" if by_key[a, "white-box"].robust_every_draw is None
                  else percent(by_key[a, "white-box"].robust_every_draw) for a in attacks]
        failed = [c.name for c in report.checks if not c.passed]
        cells.append("all passed" if not failed else "FAILED: " + "; ".join(failed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.shared / DATA
    if not data.is_file():
        print(f"the shared data is missing ({data}); pass --shared DIR", file=sys.stderr)
        return 2
    labels = args.label or args.purifier
    if len(labels) != len(args.purifier):
        print("give one --label per --purifier, or none", file=sys.stderr)
        return 2
    images, targets = load_npz(data)
    subset = (images[args.start: args.start + args.limit], targets[args.start: args.start + args.limit])
    reports = {}
    for source, label in zip(args.purifier, labels, strict=True):
        print(f"== {args.classifier} + {label}: {args.limit} images from {args.start}", file=sys.stderr)
        purifier = load_defence(source)
        report = adaptive_evaluation(
            args.classifier, subset, purifier, attacks=args.attacks, eot_samples=args.eot_samples,
            steps={"pgd": args.pgd_steps, "apgd-ce": args.apgd_steps},
            convergence_steps=() if args.no_curves else args.convergence_steps,
            convergence_eot=() if args.no_curves else args.convergence_eot,
            resubmissions=args.resubmissions, convergence_limit=args.convergence_limit,
            classifier_weights=args.shared / "models" / WEIGHTS[args.classifier], batch_size=args.batch_size,
            seed=args.seed, device=args.device, progress=not args.no_progress)
        for result in (report.main, report.high_eps):
            if result is not None:
                result.defence = label
        report.save(args.out / label.replace("/", "_"))
        print(report.to_markdown())
        reports[label] = report
    for path in sorted(args.out.glob("*/adaptive.json")):  # purifiers measured by earlier runs into --out too
        label = path.parent.name.replace("_", "/")
        if label not in reports:
            reports[label] = AdaptiveReport.load_json(path)
    text = summary(reports, args.classifier, args.start)
    atomic_write(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
