"""Classifiers by name: the architectures this package builds and the trained classifiers it ships."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..hub_files import BUNDLED_ROOT
from .cifar_resnet import cifar_resnet20, cifar_resnet56
from .squeezenet import squeezenet1_0_caffe

__all__ = ["bundled_classifier_card", "list_classifiers", "load_classifier"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "cifar_resnet20": cifar_resnet20,
    "cifar_resnet56": cifar_resnet56,
    "squeezenet1_0_caffe": squeezenet1_0_caffe,
}


# Classifiers we trained and ship inside the package: name -> (architecture, weights file).
_BUNDLED: dict[str, tuple[str, Path]] = {
    "impure/cifar10-resnet20": ("cifar_resnet20", BUNDLED_ROOT / "cifar10-resnet20" / "model.safetensors"),
    "impure/cifar10-resnet20-heldout": ("cifar_resnet20",
                                        BUNDLED_ROOT / "cifar10-resnet20-heldout" / "model.safetensors"),
}


def list_classifiers() -> list[str]:
    """Names accepted by `load_classifier`: architectures, and bundled trained classifiers ("impure/...")."""
    return sorted(_REGISTRY) + sorted(_BUNDLED)


def bundled_classifier_card(name: str) -> dict[str, Any]:
    """The `card.json` of a bundled trained classifier: how it was trained, its test accuracy and, where
    measured, its accuracy under attack through a purifier (`through_purifier`)."""
    if name not in _BUNDLED:
        raise ValueError(f"{name!r} is not a bundled trained classifier; bundled: {', '.join(sorted(_BUNDLED))}")
    return json.loads((_BUNDLED[name][1].parent / "card.json").read_text(encoding="utf-8"))


def load_classifier(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build the classifier `name` in eval mode, with `weights` (a `.safetensors` file) loaded strictly.

    Args:
        name: one of `list_classifiers()`, e.g. "cifar_resnet56", or a bundled trained classifier such as
            "impure/cifar10-resnet20-heldout" (the small CIFAR-10 ResNet-20 behind `impure demo`, which no
            purifier was trained against) or "impure/cifar10-resnet20" (the one the bundled purifiers' training
            attacks).
        weights: path of the state dict to load, or None for random initialisation (bundled: none).
    """
    if name in _BUNDLED:
        if weights is not None:
            raise ValueError(f"{name!r} is a bundled trained classifier; it takes no weights= argument")
        architecture, weights = _BUNDLED[name]
        return _REGISTRY[architecture](weights)
    if name not in _REGISTRY:
        raise ValueError(f"unknown classifier {name!r}; choose one of {', '.join(list_classifiers())}")
    return _REGISTRY[name](weights)
