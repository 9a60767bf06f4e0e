"""Turn the names in a `TrainConfig` into objects: frozen networks, the loss, attacks."""

from __future__ import annotations

import torch
from torch import nn

from impure._util.state import load_state_dict_strict, read_state_dict
from impure._util.versions import import_torchvision
from impure.config import PurifierConfig
from impure.training.config import AttackSpec, FeatureSpec, LossConfig, NetworkSpec
from impure.training.losses import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierLoss,
    FeatureLoss,
    LPIPSLoss,
    PixelL1,
    PurificationLoss,
    freeze,
    torchvision_pretrained_state,
)

__all__ = ["build_attack", "build_feature_loss", "build_loss", "load_frozen_classifier", "load_logits_classifier"]


def load_frozen_classifier(spec: NetworkSpec) -> nn.Module:
    """The classifier `spec` names (see `impure.classifiers.resolve_classifier`), frozen."""
    from impure.classifiers import resolve_classifier

    if not spec.network:
        raise ValueError("a network spec needs `network` (e.g. 'cifar_resnet20' with `weights`)")
    classifier, _ = resolve_classifier(spec.network, spec.weights or None)
    return freeze(classifier)


def load_logits_classifier(spec: NetworkSpec, where: str, image_size: int) -> nn.Module:
    """The frozen classifier `spec` names, after checking that it returns (N, classes) logits for images
    of `image_size` pixels; the error names the config field `where`."""
    classifier = load_frozen_classifier(spec)
    with torch.no_grad():
        logits = classifier(torch.rand(2, 3, image_size, image_size))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{where} ({spec.network!r}) returns {shape} for 2 images of {image_size} px, not "
                         "(N, classes) logits")
    return classifier


def build_feature_loss(spec: FeatureSpec) -> FeatureLoss:
    """A `FeatureLoss` from a spec: raw torchvision models get ImageNet normalisation and their own node
    names; other networks are taken as classifiers on [0, 1] images."""
    if spec.network.startswith("torchvision:"):
        torchvision = import_torchvision()

        name = spec.network.split(":", 1)[1]
        state = read_state_dict(spec.weights) if spec.weights else torchvision_pretrained_state(name)
        network = load_state_dict_strict(torchvision.models.get_model(name, weights=None), state,
                                         spec.weights or f"torchvision:{name}")
        return FeatureLoss(network, spec.nodes, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return FeatureLoss(load_frozen_classifier(spec), spec.nodes)


def build_loss(config: LossConfig, purifier_config: PurifierConfig) -> PurificationLoss:
    """The `PurificationLoss` that `config` describes for a purifier with `purifier_config`."""
    pixel = None
    if config.pixel_weight:
        pixel = PixelL1(purifier_config.std if config.pixel_space == "normalized" else None)
    names = [spec.name for spec in config.features]
    if len(set(names)) != len(names):
        raise ValueError(f"loss.features names must be unique, got {names}")
    features = {spec.name: build_feature_loss(spec) for spec in config.features}
    lpips = LPIPSLoss(config.lpips_net, config.lpips_pretrained) if config.lpips_weight else None
    classifier = None
    if config.classifier_weight:
        classifier = ClassifierLoss(load_frozen_classifier(config.classifier), config.classifier_mode)
    return PurificationLoss(
        pixel, config.pixel_weight, features, lpips, config.lpips_weight, classifier,
        config.classifier_weight, mixing_patch_size=purifier_config.patch_size if config.mixing else None,
    )


def build_attack(spec: AttackSpec, classifier: nn.Module):
    """The attack `spec` names (see `impure.attacks.list_attacks`; class names such as "PGD" too), aimed at
    `classifier` with the registry's settings and the spec's options: `attack(images, labels)`."""
    from impure.attacks import registry

    options = dict(spec.options)
    return registry.build_attack(spec.name, classifier, options.pop("eps", None), options.pop("steps", None),
                                 **options)
