"""Robust accuracy of the shared CIFAR-10 ResNets behind no defence, each baseline and any number of
purifiers (each at any number of strengths), under grey-box, white-box and BPDA ℓ∞ attacks at ε 8/255 on
../shared/data/cifar10/test_dev.npz.

    python benchmarks/robustness.py [--purifier NAME_OR_DIR [--strengths 0.5,1] [--label L]]...
        [--limit 500] [--white-box-limit 100] [--attacks paper] [--white-box-attacks paper]
        [--classifiers cifar_resnet20,cifar_resnet56] [--defences none,jpeg75,bits4,median3]
        [--threat all] [--steps 10] [--eot-samples 8] [--seeds 0,1,2] [--threads 2] [--device auto] [--out DIR]

Per classifier and defence: clean accuracy alone and through the defence, PSNR of the purified clean
images, robust accuracy per attack with the mean and worst case, and images/s of the classifier behind the
defence beside the classifier alone (timed batch by batch in the same pass). Grey-box rows use --limit
images and share one set of adversarial examples per classifier; white-box rows (exact gradients through
the defence, with EOT for a stochastic one) and BPDA rows use the first --white-box-limit images, since
attacking through a purifier costs a purifier pass per attack step. Every row says how many images it
counts. Prints one Markdown table and writes it, with the JSON of every run, into --out (default
benchmarks/results/robustness). With --seeds, one such report per seed and a table of the grey-box rows'
means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import (
    WEIGHTS,
    add_defence_arguments,
    add_run_arguments,
    attack_names,
    evaluate_defence,
    for_each_seed,
    load_defence,
    names,
    positive_int,
    prepare,
    write_report,
)

from impure.evaluation import DEFAULT_ATTACKS, THREATS, EvaluationResult, summary_table
from impure.formatting import in_255

_THREAT_SETS = {"both": ("grey-box", "white-box"), "all": THREATS}


def threats(text: str) -> tuple[str, ...]:
    """Comma-separated threat models (grey-box, white-box, bpda) or "both" / "all"."""
    chosen = [threat for name in names(text) for threat in _THREAT_SETS.get(name.lower(), (name.lower(),))]
    unknown = sorted(set(chosen) - set(THREATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown threat model(s) {unknown}; use {', '.join(THREATS)}, both, all")
    return tuple(dict.fromkeys(chosen))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_defence_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--classifiers", type=names, default=list(WEIGHTS), help="comma-separated")
    parser.add_argument("--attacks", type=attack_names, default=list(DEFAULT_ATTACKS),
                        help="comma-separated names, or a set: paper (the nine, default), cheap, all")
    parser.add_argument("--white-box-attacks", type=attack_names,
                        help="attacks of the white-box and BPDA rows (default: --attacks)")
    parser.add_argument("--threat", type=threats, default=THREATS,
                        help="grey-box, white-box, bpda, both or all (default)")
    parser.add_argument("--white-box-limit", type=positive_int, default=100,
                        help="images for the white-box and BPDA rows (default 100, at most --limit)")
    parser.add_argument("--eot-samples", type=positive_int, help="EOT samples for a stochastic purifier (default 8)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "robustness")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepared = prepare(args, args.classifiers)
    if prepared is None:
        return 2
    data, specs = prepared
    adaptive = tuple(threat for threat in args.threat if threat != "grey-box")
    white_box_limit = min(args.white_box_limit, args.limit or args.white_box_limit)

    def run(out: Path) -> list[EvaluationResult]:
        results = []
        start = time.perf_counter()
        for classifier in args.classifiers:
            grey_box: dict = {}  # adversarial examples made on the bare classifier, shared by every defence
            for spec in specs:
                defence = load_defence(spec)
                # Without a defence every threat model is the same attack on the same model: one row.
                if "grey-box" in args.threat or defence is None:
                    results.append(evaluate_defence(args, data, classifier, spec, defence, attacks=args.attacks,
                                                    threat="grey-box", limit=args.limit, cache=grey_box))
                if adaptive and defence is not None:
                    results.append(evaluate_defence(args, data, classifier, spec, defence,
                                                    attacks=args.white_box_attacks or args.attacks,
                                                    threat=adaptive, limit=white_box_limit, cache=grey_box))
        minutes = (time.perf_counter() - start) / 60
        first = results[0]
        settings = {name: value for r in results for name, value in r.settings["attacks"].items()}
        own_attacks = ""
        if adaptive and args.white_box_attacks and args.white_box_attacks != args.attacks:
            own_attacks = f" White-box and BPDA rows: mean and worst case over {', '.join(args.white_box_attacks)}."
        table = (
            f"Robust accuracy (%) of the shared CIFAR-10 ResNets on test_dev.npz (column *images*: N images from "
            f"image {args.start}), ℓ∞ ε = {in_255(args.eps)}, device {first.device}, seed {args.seed}, "
            f"{minutes:.1f} min in all. Without a defence every threat model is the same attack (grey-box row). "
            f"White-box: exact gradients through the defence, EOT over a stochastic one; BPDA: identity backward "
            f"through it. images/s: classifier behind the defence and classifier alone, timed side by side on the "
            f"clean images.{own_attacks} Attack settings: {json.dumps(settings)}.\n\n" + summary_table(results)
        )
        print(table)
        write_report(out, "robustness", table, argv=argv, minutes=minutes, specs=specs, results=results)
        return results

    for_each_seed(args, argv, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
