"""Classifier architectures for the shared pretrained weights, and a small registry to build them by name."""

from __future__ import annotations

from ._loading import load_weights
from .cifar_resnet import CifarResNet, cifar_resnet20, cifar_resnet56
from .lookup import Normalized, resolve_classifier
from .registry import bundled_classifier_card, list_classifiers, load_classifier
from .squeezenet import SqueezeNetCaffe, squeezenet1_0_caffe

__all__ = [
    "CifarResNet",
    "Normalized",
    "SqueezeNetCaffe",
    "bundled_classifier_card",
    "cifar_resnet20",
    "cifar_resnet56",
    "list_classifiers",
    "load_classifier",
    "load_weights",
    "resolve_classifier",
    "squeezenet1_0_caffe",
]
