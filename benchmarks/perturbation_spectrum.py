"""Frequency content of grey-box PGD perturbations against several classifiers, and how much of each survives
a purifier: why one classifier loses its robustness through the purifier when others keep it.

    python benchmarks/perturbation_spectrum.py [--classifiers impure/cifar10-resnet20,cifar_resnet20,cifar_resnet56]
        [--purifier impure/cifar10] [--start 0] [--limit 100] [--seed 0]
        [--out benchmarks/results/perturbation-spectrum]

A classifier is a name (the shared ResNets' weights are found in ../shared/models) or NAME@WEIGHTS, for
weights of your own, e.g. cifar_resnet20@runs/demo-classifier/model.safetensors.

On --limit test_dev images from image --start (0, the default, starts the selection split; 250 the reported
one): PGD-10 (ε 8/255, step 2/255) on each classifier alone; the radial power spectrum of the perturbation
x_adv - x and of the residual P(x_adv) - P(x) that the purifier lets through (both purified with the same noise),
per frequency band; the share of the perturbation's energy below a quarter of the Nyquist frequency; and each
classifier's accuracy on clean, adversarial and purified adversarial images, and on the adversarial images
through JPEG q75 (no learning: what a low-pass alone removes).
Writes perturbation-spectrum.md and .json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import SHARED, WEIGHTS, names
from fidelity import BANDS, DATA, energy_share, radial_power

from impure import Purifier
from impure._util.atomic import atomic_write
from impure.attacks import PGD
from impure.classifiers import resolve_classifier
from impure.data import load_npz
from impure.defences.baselines import load_baseline


def accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (classifier(images).argmax(1) == labels).float().mean().item() * 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifiers", default="impure/cifar10-resnet20,cifar_resnet20,cifar_resnet56")
    parser.add_argument("--purifier", default="impure/cifar10")
    parser.add_argument("--start", type=int, default=0, help="first test_dev image (default 0)")
    parser.add_argument("--limit", type=int, default=100, help="test_dev images from --start (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of PGD's start and the purifier's noise")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "perturbation-spectrum")
    args = parser.parse_args(argv)
    if not DATA.is_file():
        print(f"{DATA} not found: this benchmark reads the shared data beside the checkout", file=sys.stderr)
        return 2
    started = time.time()
    images, labels = load_npz(DATA)
    images, labels = images[args.start:args.start + args.limit], labels[args.start:args.start + args.limit]
    purifier = Purifier.from_pretrained(args.purifier)
    jpeg = load_baseline("jpeg75")  # a purifier that learned nothing: what JPEG's low-pass alone removes
    rows = []
    for name in names(args.classifiers):
        architecture, _, weights = name.partition("@")
        if not weights and architecture in WEIGHTS:
            weights = SHARED / "models" / WEIGHTS[architecture]
        classifier, _ = resolve_classifier(architecture, weights or None)
        classifier.eval()
        adversarial = PGD(classifier, eps=8 / 255, alpha=2 / 255, steps=10, seed=args.seed)(images, labels)
        with torch.no_grad():
            purified_clean = purifier(images, generator=torch.Generator().manual_seed(args.seed))
            purified_adv = purifier(adversarial, generator=torch.Generator().manual_seed(args.seed))
            delta, residual = adversarial - images, purified_adv - purified_clean
            rows.append({
                "classifier": name, "clean": accuracy(classifier, images, labels),
                "adversarial": accuracy(classifier, adversarial, labels),
                "purified_clean": accuracy(classifier, purified_clean, labels),
                "purified_adversarial": accuracy(classifier, purified_adv, labels),
                "jpeg_adversarial": accuracy(classifier, jpeg(adversarial), labels),
                "perturbation_spectrum": radial_power(delta), "residual_spectrum": radial_power(residual),
                "perturbation_low_share": energy_share(delta, 0, 0.25),
                "residual_low_share": energy_share(residual, 0, 0.25),
                "residual_l2_ratio": (residual.flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)).mean().item(),
            })
    bands = [f"{low:g}-{high:g}" for low, high in zip(BANDS[:-1], [*BANDS[1:-1], 1.41], strict=True)]
    lines = [f"Grey-box PGD-10 (ε 8/255) on each classifier alone, {len(labels)} test_dev images from image "
             f"{args.start}, "
             f"purified by {args.purifier} (noise seed {args.seed}). Accuracy (%) of the classifier attacked:", "",
             "| classifier | clean | PGD | purified clean | purified PGD | JPEG q75 PGD | perturbation energy below "
             "0.25 Nyquist | residual's | residual / perturbation (L2) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['classifier']} | {r['clean']:.1f} | {r['adversarial']:.1f} | {r['purified_clean']:.1f} | "
              f"{r['purified_adversarial']:.1f} | {r['jpeg_adversarial']:.1f} | "
              f"{r['perturbation_low_share']:.1f} % | "
              f"{r['residual_low_share']:.1f} % | {r['residual_l2_ratio']:.2f} |" for r in rows]
    lines += ["", "Share of the perturbation's power that survives the purifier, per radial frequency band "
              "(residual power / perturbation power, %):", "", "| classifier | " + " | ".join(bands) + " |",
              "|---|" + "---:|" * len(bands)]
    lines += [f"| {r['classifier']} | " + " | ".join(f"{100 * res / per:.0f}" for res, per in
                                                     zip(r["residual_spectrum"], r["perturbation_spectrum"],
                                                         strict=True)) + " |" for r in rows]
    lines += ["", "The perturbation's power per band (× 10⁻⁶):", "", "| classifier | " + " | ".join(bands) + " |",
              "|---|" + "---:|" * len(bands)]
    lines += [f"| {r['classifier']} | " + " | ".join(f"{1e6 * v:.1f}" for v in r["perturbation_spectrum"]) + " |"
              for r in rows]
    markdown = "\n".join(lines) + "\n"
    payload = {"argv": sys.argv[1:] if argv is None else argv, "minutes": round((time.time() - started) / 60, 1),
               "purifier": args.purifier, "start": args.start, "images": len(labels), "bands": list(BANDS),
               "rows": rows}
    atomic_write(args.out / "perturbation-spectrum.md", markdown)
    atomic_write(args.out / "perturbation-spectrum.json", json.dumps(payload, indent=2) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
