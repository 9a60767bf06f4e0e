"""Where a purifier loses fidelity on clean CIFAR-10 images: PSNR and clean accuracy against the noise
timestep, the error of each patch position, the error spectrum, and the identity-capable bounds.

    python benchmarks/fidelity.py [--purifier impure/cifar10 --label impure/cifar10 ...] [--limit 250]
        [--times 0,1,5,10,20,40,80,120,160,240,320,399] [--classifier cifar_resnet56] [--seed 0]
        [--out benchmarks/results/fidelity-cifar10]

On ../shared/data/cifar10/test_dev.npz (images 0 to --limit - 1, the selection split), for each purifier:

- **noise t sweep**: image noise t from the list, feature noise t = 1.5 x image t (the ratio of the bundled
  weights' 80/120, within the training range 0-599): PSNR of the purified clean images and the classifier's
  accuracy on them. Beside it, two bounds a purifier with an identity-capable path could reach: the noisy
  copy itself (noisy / signal, the information a hidden patch gets about its own pixels) and its clean
  accuracy, and JPEG (quality 75) and 4-bit depth as reference errors;
- **patch position**: the mean squared error of the output at the nominal strength, per pixel position inside
  a patch and per lattice group, and for border against interior patches;
- **spectrum**: the radial power spectrum of the error (output - image) against the image's own, in bands of
  the normalised frequency, and the share of the error's energy above half the Nyquist frequency, for the
  purifier and the baselines;
- **training noise**: the share of training samples below given timesteps under the config's uniform range.

Writes fidelity.md and fidelity.json into --out. Each run draws the same noise (--seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import SHARED, WEIGHTS, names

from impure import Purifier
from impure._util.atomic import atomic_write
from impure.classifiers import load_classifier
from impure.data import load_npz
from impure.defences.baselines import load_baseline
from impure.metrics import psnr
from impure.model.masking import lattice_group_ids

DATA = SHARED / "data" / "cifar10" / "test_dev.npz"
BANDS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0)  # radial frequency / Nyquist (corners reach 1.41)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purifier", action="append", help="a purifier name or folder (repeatable)")
    parser.add_argument("--label", action="append", help="its label in the tables (one per --purifier)")
    parser.add_argument("--limit", type=int, default=250, help="test_dev images from image 0 (default 250)")
    parser.add_argument("--times", default="0,1,5,10,20,40,80,120,160,240,320,399",
                        help="image noise timesteps of the sweep (feature t = 1.5x, capped at 599)")
    parser.add_argument("--classifier", default="cifar_resnet56", choices=sorted(WEIGHTS))
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=125, help="images per forward pass (default 125)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fidelity-cifar10")
    args = parser.parse_args(argv)
    args.purifier = args.purifier or ["impure/cifar10"]
    args.label = args.label or list(args.purifier)
    if len(args.label) != len(args.purifier):
        parser.error("give one --label per --purifier")
    args.times = [int(t) for t in names(args.times)]
    return args


def batched(function, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([function(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return (batched(classifier, images, batch_size).argmax(1) == labels).float().mean().item() * 100


def mean_psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    return psnr(images.clamp(0, 1), reference).mean().item()


def purify(purifier: Purifier, images: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return batched(lambda x: purifier(x, generator=generator), images, batch_size)


def noisy_copy(purifier: Purifier, images: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """noisy / signal at image timestep t, back in [0, 1] pixels: what a hidden patch knows of its own pixels."""
    signal, scale = purifier.noise_signal[t], purifier.noise_scale[t]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return images + (scale / signal) * noise * purifier.std


def power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean power spectrum of `x` (N, 3, H, W) over images and channels, (H, W), and each frequency's radius
    as a fraction of the Nyquist frequency (1 on the axes' ends, 1.41 in the corners)."""
    spectrum = torch.fft.fft2(x.double()).abs().pow(2).mean(dim=(0, 1))
    fy = torch.fft.fftfreq(spectrum.shape[0]).abs()[:, None] * 2
    fx = torch.fft.fftfreq(spectrum.shape[1]).abs()[None, :] * 2
    return spectrum, (fy ** 2 + fx ** 2).sqrt()


def radial_power(x: torch.Tensor) -> list[float]:
    """Mean power of `x` (N, 3, H, W) per radial frequency band (BANDS, as a fraction of Nyquist)."""
    spectrum, radius = power_spectrum(x)
    edges = [*BANDS[:-1], float("inf")]
    return [spectrum[(radius >= low) & (radius < high)].mean().item()
            for low, high in zip(edges[:-1], edges[1:], strict=True)]


def energy_share(x: torch.Tensor, low: float, high: float = float("inf")) -> float:
    """Share (%) of the energy of `x` (N, 3, H, W) at radial frequencies in [low, high) x Nyquist."""
    spectrum, radius = power_spectrum(x)
    return (spectrum[(radius >= low) & (radius < high)].sum() / spectrum.sum()).item() * 100


def position_errors(output: torch.Tensor, images: torch.Tensor, config) -> dict:
    """Mean squared error (x 1e3) per pixel position inside a patch, per lattice group, border / interior."""
    squared = (output - images).pow(2).mean(dim=(0, 1))  # (H, W)
    p, rows = config.patch_size, images.shape[-1] // config.patch_size
    in_patch = squared.view(rows, p, rows, p).mean(dim=(0, 2))  # (p, p)
    per_patch = squared.view(rows, p, rows, p).mean(dim=(1, 3))  # (rows, rows)
    groups = lattice_group_ids(rows, rows, config.num_groups).view(rows, rows)
    border = torch.zeros(rows, rows, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    return {
        "in_patch": [[round(v * 1e3, 3) for v in row] for row in in_patch.tolist()],
        "groups": [round(per_patch[groups == g].mean().item() * 1e3, 3) for g in range(config.num_groups)],
        "border": round(per_patch[border].mean().item() * 1e3, 3),
        "interior": round(per_patch[~border].mean().item() * 1e3, 3),
    }


def analyse(source: str, images: torch.Tensor, labels: torch.Tensor, classifier: torch.nn.Module,
            args: argparse.Namespace) -> dict:
    purifier = Purifier.from_pretrained(source).float()
    config = purifier.config
    nominal = (config.image_noise_t, config.feature_noise_t)
    sweep = []
    for t in args.times:
        feature_t = min(round(1.5 * t), config.noise_steps - 1)
        at_t = Purifier.from_pretrained(source, image_noise_t=t, feature_noise_t=feature_t).float()
        output = purify(at_t, images, args.seed, args.batch_size)
        noisy = noisy_copy(purifier, images, t, args.seed)
        sweep.append({"image_t": t, "feature_t": feature_t, "psnr": round(mean_psnr(output, images), 2),
                      "accuracy": round(accuracy(classifier, output, labels, args.batch_size), 1),
                      "noisy_psnr": round(mean_psnr(noisy, images), 2),
                      "noisy_accuracy": round(accuracy(classifier, noisy.clamp(0, 1), labels, args.batch_size), 1)})
    output = purify(purifier, images, args.seed, args.batch_size)
    low, high = config.train_image_noise_t
    shares = {str(t): round(max(0, min(t, high + 1) - low) / (high - low + 1) * 100, 2) for t in (10, 40, 80, 120)}
    return {"source": source, "nominal_noise_t": list(nominal), "noisy_skip": config.noisy_skip, "sweep": sweep,
            "positions": position_errors(output, images, config),
            "spectrum": radial_power(output - images),
            "high_share": round(energy_share(output - images, 0.5), 1),
            "train_image_noise_t": [low, high], "train_share_below": shares}


def markdown(report: dict) -> str:
    lines = [f"Fidelity on {report['images']} test_dev images (from image 0), classifier {report['classifier']}, "
             f"noise seed {report['seed']}; bare classifier {report['bare_accuracy']:.1f} %.", ""]
    for row in report["purifiers"]:
        lines += [f"## {row['label']} (nominal noise t {row['nominal_noise_t'][0]}/{row['nominal_noise_t'][1]}"
                  f"{', noisy-pixel skip path' if row['noisy_skip'] else ''})", "",
                  "| noise t (image / feature) | PSNR (dB) | clean accuracy | noisy copy PSNR | noisy copy accuracy |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {s['image_t']} / {s['feature_t']} | {s['psnr']:.2f} | {s['accuracy']:.1f} "
                  f"| {s['noisy_psnr']:.2f} | {s['noisy_accuracy']:.1f} |" for s in row["sweep"]]
        pos = row["positions"]
        lines += ["", "Squared error (x 1e-3) at the nominal strength, per pixel inside a patch (rows): "
                  + "; ".join(", ".join(f"{v:.3f}" for v in r) for r in pos["in_patch"])
                  + f". Per lattice group: {', '.join(f'{v:.3f}' for v in pos['groups'])}. Border patches "
                  f"{pos['border']:.3f}, interior {pos['interior']:.3f}.", "",
                  f"Training draws image t uniformly in {row['train_image_noise_t']}: "
                  + ", ".join(f"{share} % of samples below t = {t}" for t, share in row["train_share_below"].items())
                  + ".", ""]
    lines += ["## Error spectrum", "",
              "The error's mean power per radial frequency band (as a fraction of Nyquist) in % of the images' own "
              "power in that band (their mean removed), and the share of the error's energy at or above half the "
              "Nyquist frequency:", "",
              "| defence | " + " | ".join(f"{lo:g}-{hi:g}" for lo, hi in zip(BANDS[:-1], [*BANDS[1:-1], 1.41],
                                                                       strict=True)) + " | high share |",
              "|---|" + "---:|" * len(BANDS)]
    for name, values, share in report["spectra"]:
        lines.append(f"| {name} | " + " | ".join(f"{100 * v / ref:.1f}" for v, ref in
                                                 zip(values, report["image_spectrum"], strict=True))
                     + f" | {share:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not DATA.is_file():
        print(f"{DATA} not found: this benchmark reads the shared data beside the checkout", file=sys.stderr)
        return 2
    started = time.time()
    torch.manual_seed(args.seed)
    images, labels = load_npz(DATA)
    images, labels = images[:args.limit], labels[:args.limit]
    classifier = load_classifier(args.classifier, SHARED / "models" / WEIGHTS[args.classifier])
    report = {"images": len(images), "classifier": args.classifier, "seed": args.seed,
              "bare_accuracy": accuracy(classifier, images, labels, args.batch_size), "purifiers": [], "spectra": []}
    for source, label in zip(args.purifier, args.label, strict=True):
        row = analyse(source, images, labels, classifier, args)
        row["label"] = label
        report["purifiers"].append(row)
        report["spectra"].append((f"{label} (nominal t)", row["spectrum"], row["high_share"]))
    for name in ("jpeg75", "bits4"):
        output = batched(load_baseline(name), images, args.batch_size)
        report["baselines"] = {**report.get("baselines", {}), name: {
            "psnr": round(mean_psnr(output, images), 2),
            "accuracy": round(accuracy(classifier, output, labels, args.batch_size), 1)}}
        report["spectra"].append((f"{name} ({report['baselines'][name]['psnr']:.1f} dB, "
                                  f"{report['baselines'][name]['accuracy']:.1f} %)",
                                  radial_power(output - images),
                                  round(energy_share(output - images, 0.5), 1)))
    report["image_spectrum"] = radial_power(images - images.mean(dim=(2, 3), keepdim=True))
    report["argv"] = sys.argv[1:] if argv is None else argv
    report["minutes"] = round((time.time() - started) / 60, 1)
    atomic_write(args.out / "fidelity.md", markdown(report))
    atomic_write(args.out / "fidelity.json", json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
