"""The accuracy–robustness frontier of purifier configurations and the baselines: one shared CIFAR-10
classifier on ../shared/data/cifar10/test_dev.npz, grey-box ℓ∞ attacks at ε 8/255.

    python benchmarks/frontier.py --purifier runs/a/model [--strengths 0.5,0.75,1] [--label A]
        [--purifier runs/b/model ...] [--defences none,jpeg75,bits4,median3]
        [--classifier cifar_resnet56] [--attacks cheap] [--limit 500] [--seeds 0,1,2] [--threads 2] [--out DIR]

Per defence (each purifier at each of its strengths): clean accuracy through the defence, grey-box PGD
robust accuracy, the grey-box mean and worst case over the attack set (default `cheap`: FGSM, PGD, MI-FGSM,
APGD-DLR; `paper` for the paper's nine; PGD is always included), PSNR of the purified clean images, and
images/s beside the classifier alone. One Markdown table sorted by clean accuracy through the defence, with
★ on the Pareto frontier of (clean, grey-box mean); written with the JSON of every run into --out
(default benchmarks/results/frontier). With --seeds, one such report per seed and a table of the means.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import (
    ATTACK_SETS,
    WEIGHTS,
    add_defence_arguments,
    add_run_arguments,
    attack_names,
    evaluate_defence,
    for_each_seed,
    load_defence,
    prepare,
    write_report,
)

from impure.evaluation import EvaluationResult, frontier_table
from impure.formatting import in_255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_defence_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--classifier", default="cifar_resnet56", help=f"one of {', '.join(WEIGHTS)}")
    parser.add_argument("--attacks", type=attack_names, default=list(ATTACK_SETS["cheap"]),
                        help="comma-separated names, or a set: cheap (default), paper (the nine), all")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "frontier")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepared = prepare(args, [args.classifier])
    if prepared is None:
        return 2
    data, specs = prepared
    attacks = args.attacks if "pgd" in args.attacks else [*args.attacks, "pgd"]  # the PGD column

    def run(out: Path) -> list[EvaluationResult]:
        cache: dict = {}  # grey-box examples, made once on the bare classifier for every defence
        start = time.perf_counter()
        results = [
            evaluate_defence(args, data, args.classifier, spec, load_defence(spec), attacks=attacks,
                             threat="grey-box", limit=args.limit, cache=cache)
            for spec in specs
        ]  # fmt: skip
        minutes = (time.perf_counter() - start) / 60
        first = results[0]
        table = (
            f"Grey-box robust accuracy (%) of {first.classifier} (alone: {100 * first.clean_accuracy:.1f} % "
            f"clean) on {first.num_images} images of test_dev.npz from image {args.start}, ℓ∞ ε = "
            f"{in_255(args.eps)}; mean and worst case over {', '.join(attacks)}; ★: on the Pareto frontier "
            f"of clean accuracy through the defence and the grey-box mean. Device {first.device}, seed "
            f"{args.seed}, {minutes:.1f} min in all. Attack settings: {json.dumps(first.settings['attacks'])}."
            f"\n\n" + frontier_table(results, attack="pgd")
        )
        print(table)
        write_report(out, "frontier", table, argv=argv, minutes=minutes, specs=specs, results=results)
        return results

    for_each_seed(args, argv, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
