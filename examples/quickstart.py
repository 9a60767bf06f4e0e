"""Quickstart: put an IMPure purifier in front of an image classifier in two lines (offline, CPU, seconds).

Run with `python examples/quickstart.py`. Everything it uses ships with the package: the bundled CIFAR-10
purifier, the demo ResNet-20 (which no purifier was trained against) and 20 CIFAR-10 test images. `impure demo`
adds an attack to the same story.
"""

from __future__ import annotations

import torch

from impure import PurifiedClassifier, Purifier, select_device
from impure.attacks import PGD
from impure.classifiers import load_classifier
from impure.demo import load_demo_images


def main() -> None:
    torch.manual_seed(0)  # the purifier's noise: the same numbers on every run
    device = select_device("auto")
    images, labels, source = load_demo_images()
    images, labels = images.to(device), labels.to(device)
    classifier = load_classifier("impure/cifar10-resnet20-heldout").to(device).eval()

    # The two-line wrap: `model` returns logits, like the classifier it wraps.
    purifier = Purifier.from_pretrained("impure/cifar10", device=device)
    model = PurifiedClassifier(purifier, classifier).eval()

    adversarial = PGD(classifier, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)(images, labels)  # grey-box
    with torch.no_grad():
        accuracy = {
            "bare classifier, clean images": classifier(images),
            "bare classifier, PGD images": classifier(adversarial),
            "through the purifier, clean images": model(images),
            "through the purifier, PGD images": model(adversarial),
        }
    print(f"{source}, on {device}")
    for name, logits in accuracy.items():
        print(f"  {name:<36} {(logits.argmax(1) == labels).float().mean():.0%}")


if __name__ == "__main__":
    main()
