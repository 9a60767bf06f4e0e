"""Bundle a classifier trained by recipes/train_demo_classifier.py as the demo's, with its card and model card.

    python recipes/bundle_demo_classifier.py runs/heldout-scratch runs/heldout-scratch-lossless \
        --out src/impure/weights/cifar10-resnet20-heldout --name impure/cifar10-resnet20-heldout \
        [--spectrum benchmarks/results/perturbation-spectrum/heldout/reported/perturbation-spectrum.json] \
        [--compute "about 80 minutes on one thread of an AMD EPYC (Zen 4)"]

RUNS are the training stages in order (each an --out folder of train_demo_classifier.py with card.json); the last
one's model.safetensors is bundled. OUT gets model.safetensors, card.json (every stage's settings, the folders,
--compute, the test_dev accuracy and, with --spectrum, the classifier's and the shared ResNet-56's accuracy under
grey-box PGD-10 through the purifier, read from benchmarks/perturbation_spectrum.py's JSON: what `impure demo`
quotes) and README.md; tests/test_recipes.py rewrites both from card.json. Run it without --spectrum first, measure
the bundled name with the benchmark, then again with it. Where the run folders are gone, `--from-card FOLDER` takes
the stages, the run folders' names and the weights from a bundled folder instead (e.g. to quote a new --spectrum
measurement after the purifier changed):

    python recipes/bundle_demo_classifier.py --from-card src/impure/weights/cifar10-resnet20-heldout \
        --out src/impure/weights/cifar10-resnet20-heldout --name impure/cifar10-resnet20-heldout \
        --spectrum benchmarks/results/perturbation-spectrum/heldout/reported-stretch13/perturbation-spectrum.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from impure._util.atomic import atomic_write

REFERENCE = "cifar_resnet56"  # the classifier of the README's table


def command(card: dict, out: Path) -> str:
    """The train_demo_classifier.py command that a stage's card.json records (its --out folder `out`)."""
    parts = ["python recipes/train_demo_classifier.py", f"--out {out}", f"--data {card['data']}"]
    if card.get("init"):
        parts.append(f"--init {card['init']}")
    if card.get("teacher"):
        parts.append(f"--teacher {card['teacher']}")
    parts += ["--high-frequencies"] * bool(card.get("high_frequencies")) + ["--bf16"] * bool(card.get("bf16"))
    parts += [f"--epochs {card['epochs']}", f"--lr {card['lr']:g}", f"--weight-decay {card['weight_decay']:g}",
              f"--batch-size {card['batch_size']}", f"--seed {card['seed']}"]
    return " ".join(parts)


def through_purifier(spectrum: Path, name: str) -> dict:
    """The classifier's and the ResNet-56's accuracies in the benchmark's JSON."""
    payload = json.loads(spectrum.read_text())
    rows = {row["classifier"]: row for row in payload["rows"]}
    missing = [key for key in (name, REFERENCE) if key not in rows]
    if missing:
        raise SystemExit(f"{spectrum} has no row for {missing}: measure them with benchmarks/perturbation_spectrum.py")
    start = payload["start"]
    keys = ("clean", "adversarial", "purified_clean", "purified_adversarial")
    return {"purifier": payload["purifier"],
            "attack": "grey-box PGD-10 (eps 8/255, step 2/255) on the classifier alone",
            "images": f"test_dev {start}-{start + payload['images'] - 1}", "source": str(spectrum),
            "accuracy": {key: {k: round(rows[key][k], 1) for k in keys} for key in (name, REFERENCE)}}


def model_card(name: str, stages: list[dict], runs: list[Path], measured: dict | None, compute: str) -> str:
    last = stages[-1]
    lines = [f"# {name} — the demo classifier", "",
             "A CIFAR-10 ResNet-20 (`impure.classifiers.cifar_resnet20`, RGB input in [0, 1], normalised inside with "
             "ImageNet statistics) behind `impure demo`, `impure app` and `examples/quickstart.py`. Load it with "
             f'`impure.classifiers.load_classifier("{name}")`. No purifier was trained against it or against a '
             "classifier it was derived from, so it witnesses a purifier as the README's held-out ResNet-56 does.",
             "", "- Data: CIFAR-10 training images from `../shared/data/cifar10` (the JPEG q75 set with its 5,085 "
             "lossless originals where they exist, then those 5,085 alone), random 4-pixel-padded crops and "
             "horizontal flips, and high frequencies given back (a random unsharp mask and Gaussian noise).",
             "- Recipe: distilled from the shared ResNet-56 (cross-entropy + KL divergence to its predictions on the "
             "same altered image, temperature 4), SGD with Nesterov momentum 0.9, one-cycle learning rate, "
             "bfloat16 autocast; the stages, in order:", ""]
    lines += [f"      {command(card, run)}" for card, run in zip(stages, runs, strict=True)]
    lines += [""] + [f"- Compute: {compute}."] * bool(compute) + [
              "- Weights: float16 safetensors; `card.json` holds every stage's settings and the measurements.",
              f"- Accuracy on `test_dev.npz` (the first 500 CIFAR-10 test images): "
              f"{100 * last['test_dev_accuracy_fp16_weights']:.1f} % with the shipped float16 weights "
              f"({100 * last['test_dev_accuracy_fp32']:.1f} % in float32).",
              "- Not adversarially trained."]
    if measured:
        ours, reference = measured["accuracy"][name], measured["accuracy"][REFERENCE]
        lines += ["", f"Through `{measured['purifier']}` ({measured['attack']}, {measured['images']}; "
                  f"`{measured['source']}`):", "",
                  "| classifier | clean | PGD-10 | purified clean | purified PGD-10 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {key} | {row['clean']:.1f} | {row['adversarial']:.1f} | {row['purified_clean']:.1f} | "
                  f"{row['purified_adversarial']:.1f} |" for key, row in ((name, ours), (REFERENCE, reference))]
        lines += ["", "docs/training.md (\"The demo classifier\") tells how this recipe was found and why the earlier "
                  "demo classifier, trained on JPEG images alone, kept far less."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="the training stages' --out folders, in order")
    parser.add_argument("--from-card", type=Path, help="a bundled classifier's folder whose card.json and weights "
                                                       "stand in for the run folders")
    parser.add_argument("--out", type=Path, required=True, help="the bundled classifier's folder")
    parser.add_argument("--name", required=True, help="the name it is loaded by, e.g. impure/cifar10-resnet20-heldout")
    parser.add_argument("--spectrum", type=Path, help="benchmarks/perturbation_spectrum.py's JSON measuring --name")
    parser.add_argument("--compute", help="the training's compute, in words (with --from-card: its card's)")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.from_card):
        parser.error("give the run folders or --from-card, not both")
    if args.from_card:
        bundled = json.loads((args.from_card / "card.json").read_text())
        stages, runs, weights = bundled["stages"], [Path(run) for run in bundled["runs"]], args.from_card
        compute = bundled["compute"] if args.compute is None else args.compute
    else:
        stages, runs, weights, compute = [], args.runs, args.runs[-1], args.compute or ""
        for run in runs:
            card = run / "card.json"
            if not card.is_file():
                raise SystemExit(f"{card} not found: is {run} a finished train_demo_classifier.py run?")
            stages.append(json.loads(card.read_text()))
    last = stages[-1]
    measured = through_purifier(args.spectrum, args.name) if args.spectrum else None
    atomic_write(args.out / "model.safetensors", (weights / "model.safetensors").read_bytes())
    card = {"name": args.name, "architecture": last["architecture"], "stages": stages,
            "runs": [str(run) for run in runs], "compute": compute,
            "test_dev_accuracy_fp32": last["test_dev_accuracy_fp32"],
            "test_dev_accuracy_fp16_weights": last["test_dev_accuracy_fp16_weights"]}
    if measured:
        card["through_purifier"] = measured
    atomic_write(args.out / "card.json", json.dumps(card, indent=1) + "\n")
    atomic_write(args.out / "README.md", model_card(args.name, stages, runs, measured, compute))
    print(f"wrote {args.out}: model.safetensors, card.json, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
