"""DeepFool speed: impure's batched ℓ∞ DeepFool against torchattacks' per-image DeepFool, side by side.

Runs both on the first CIFAR-10 test_dev images with the shared ResNet-56 on the CPU and prints the
wall-clock times, their ratio (the target is impure >= 10x faster) and the robust accuracies.
torchattacks' DeepFool is the ℓ2 form with no budget; its result is also shown clipped into the same
ℓ∞ ball as ours. Needs `../shared` and torchattacks (`pip install --no-deps torchattacks`).

    python benchmarks/attack_speed.py [--images 200] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from impure.attacks import DeepFool
from impure.classifiers import cifar_resnet56

SHARED = Path(__file__).resolve().parents[2] / "shared"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="first N test_dev images (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    parser.add_argument("--eps", type=float, default=8 / 255, help="ℓ∞ budget of our DeepFool (default 8/255)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared)")
    return parser.parse_args()


def load(shared: Path, count: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    if not shared.is_dir():
        raise SystemExit(f"shared folder not found at {shared}; pass --shared PATH")
    data = np.load(shared / "data/cifar10/test_dev.npz")
    images = torch.from_numpy(data["images"][:count]).permute(0, 3, 1, 2).float() / 255
    model = cifar_resnet56(shared / "models/cifar10_resnet56.safetensors")
    return model, images, torch.from_numpy(data["labels"][:count])


def timed(attack, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    adversarial = attack(images, labels)
    return adversarial, time.perf_counter() - start


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def main() -> None:
    args = parse_args()
    try:
        import torchattacks
    except ImportError as error:
        raise SystemExit("torchattacks is needed for the comparison: pip install --no-deps torchattacks") from error
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, images, labels = load(args.shared, args.images)
    ours, ours_time = timed(DeepFool(model, eps=args.eps, steps=50, overshoot=0.02, candidates=10), images, labels)
    theirs, theirs_time = timed(torchattacks.DeepFool(model, steps=50, overshoot=0.02), images, labels)
    clipped = (images + (theirs - images).clamp(-args.eps, args.eps)).clamp(0, 1)

    print(f"DeepFool on {len(images)} CIFAR-10 test_dev images, ResNet-56, CPU, {torch.get_num_threads()} threads")
    print(f"clean accuracy                        {accuracy(model, images, labels):6.1%}")
    print(f"impure DeepFool (l-inf, eps {args.eps * 255:.0f}/255)     "
          f"{ours_time:8.1f} s   robust accuracy {accuracy(model, ours, labels):6.1%}")
    print(f"torchattacks DeepFool (l2, no budget) {theirs_time:8.1f} s   robust accuracy "
          f"{accuracy(model, theirs, labels):6.1%}   clipped to eps {accuracy(model, clipped, labels):6.1%}")
    print(f"speed-up: impure is {theirs_time / ours_time:.1f}x faster (target >= 10x)")


if __name__ == "__main__":
    main()
