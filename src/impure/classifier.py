"""`PurifiedClassifier`: any classifier behind a purifier, as one ordinary `nn.Module`."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from ._util.bpda import straight_through

__all__ = ["PurifiedClassifier"]

_GRADIENTS = ("full", "bpda")


class PurifiedClassifier(nn.Module):
    """Logits of `classifier(purifier(x))` for images x in [0, 1].

    Args:
        purifier: maps (N, 3, H, W) images in [0, 1] to purified images (a `Purifier`, a baseline, ...).
        classifier: maps images in [0, 1] to (N, classes) logits; it normalises its input itself.
        gradient: "full" for exact gradients through the purifier (the honest white-box default) or
            "bpda" for an identity backward through the purifier (Athalye et al. 2018), for attack research.
    """

    def __init__(self, purifier: nn.Module, classifier: nn.Module,
                 gradient: Literal["full", "bpda"] = "full") -> None:
        super().__init__()
        if gradient not in _GRADIENTS:
            raise ValueError(f"gradient must be 'full' or 'bpda', got {gradient!r}")
        self.purifier = purifier
        self.classifier = classifier
        self.gradient = gradient
        # Report the mode the wrapped models are in (a new module would say "training") without changing it.
        self.training = classifier.training
        self._warned_training = False

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        """Purified images, (N, 3, H, W) in [0, 1]."""
        if self.gradient == "bpda":
            with torch.no_grad():
                purified = self.purifier(images)
            return straight_through(images, purified)
        return self.purifier(images)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's logits on `images` as given (no purification)."""
        return self.classifier(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits on the purified images, (N, classes)."""
        if self.classifier.training and not self._warned_training:
            self._warned_training = True
            warnings.warn("the classifier behind PurifiedClassifier is in training mode: its batch-norm statistics "
                          "and dropout would change with every attacked batch; call .eval() on it (or on the "
                          "PurifiedClassifier) before evaluating or attacking", UserWarning, stacklevel=2)
        return self.classify(self.purify(images))

    def extra_repr(self) -> str:
        return f"gradient={self.gradient!r}"
