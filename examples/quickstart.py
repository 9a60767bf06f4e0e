"""Quickstart: put an IMPure purifier in front of an image classifier in two lines (offline, CPU, seconds).

Run from the repository root with `python examples/quickstart.py`. With a `../shared` folder beside the
checkout it uses CIFAR-10 test images and the pretrained CIFAR-10 ResNet-20; without one, random images
and an untrained ResNet-20. The purifier is the bundled CIFAR-10 one when the package ships it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from impure import PurifiedClassifier, Purifier, PurifierConfig, select_device
from impure.classifiers import cifar_resnet20
from impure.hub import bundled_names

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BATCH = 16
BUNDLED = "impure/cifar10-s"


def load_purifier() -> Purifier:
    """The bundled CIFAR-10 weights once shipped, else the reference fixture's small model from
    `../shared`, else the "cifar10-s" preset with random weights."""
    if BUNDLED in bundled_names():
        print(f"purifier:   Purifier.from_pretrained({BUNDLED!r}), the bundled CIFAR-10 weights")
        return Purifier.from_pretrained(BUNDLED)
    reference = SHARED / "reference" / "ref_small.safetensors"
    if reference.is_file():
        print(f"purifier:   converted from the reference checkpoint {reference}")
        print("            (a test fixture with untrained weights: it shows the plumbing, not purification)")
        return Purifier.from_reference(reference)
    print('purifier:   Purifier(PurifierConfig.preset("cifar10-s")) with random weights')
    print("            (trained weights are not bundled yet: load yours with Purifier.from_pretrained)")
    return Purifier(PurifierConfig.preset("cifar10-s"))


def load_classifier() -> torch.nn.Module:
    """The pretrained CIFAR-10 ResNet-20 from `../shared`, or the same network untrained."""
    weights = SHARED / "models" / "cifar10_resnet20.safetensors"
    if weights.is_file():
        print(f"classifier: CIFAR-10 ResNet-20 with weights {weights}")
        return cifar_resnet20(weights)
    print("classifier: CIFAR-10 ResNet-20, untrained (no ../shared folder here): expect chance accuracy")
    return cifar_resnet20()


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of CIFAR-10 test images and labels from `../shared`, or random images and labels."""
    data = SHARED / "data" / "cifar10" / "test_dev.npz"
    if data.is_file():
        with np.load(data) as arrays:
            images = torch.from_numpy(arrays["images"][:BATCH]).permute(0, 3, 1, 2).float() / 255
            labels = torch.from_numpy(arrays["labels"][:BATCH])
        print(f"images:     the first {BATCH} CIFAR-10 test images from {data}")
        return images, labels
    print(f"images:     {BATCH} random 32x32 images with random labels")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, 32, 32, generator=generator)
    return images, torch.randint(0, 10, (BATCH,), generator=generator)


def describe(name: str, images: torch.Tensor) -> None:
    low, high = images.min().item(), images.max().item()
    print(f"{name:<11} {tuple(images.shape)} {images.dtype}, values in [{low:.3f}, {high:.3f}]")


def main() -> None:
    torch.manual_seed(0)
    device = select_device("auto")
    images, labels = load_images()
    classifier = load_classifier()

    # The two-line wrap: `model` returns logits, like the classifier it wraps.
    purifier = load_purifier()
    model = PurifiedClassifier(purifier, classifier).to(device).eval()

    images, labels = images.to(device), labels.to(device)
    with torch.no_grad():
        purified = model.purify(images)
        logits = model(images)
        bare = model.classify(images)
    change = (purified - images).abs()

    print(f"device:     {device}")
    describe("input:", images)
    describe("purified:", purified)
    print(f"logits:     {tuple(logits.shape)}")
    print(f"mean |purified - input| = {change.mean():.4f}, max = {change.max():.4f}")
    print(f"accuracy:   {(bare.argmax(1) == labels).float().mean():.1%} bare classifier, "
          f"{(logits.argmax(1) == labels).float().mean():.1%} through the purifier")


if __name__ == "__main__":
    main()
