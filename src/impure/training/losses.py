"""Training losses of IMPure (arXiv 2311.15339): pixel L1, feature L1 on patch-mixed images, LPIPS, CE.

`PurificationLoss` combines them: total = w_pixel * pixel + sum_i w_i * feature_i (+ optional LPIPS and
classifier terms), returning every term so that each can be logged. Frozen networks stay in eval mode and
their weights never receive gradients; gradients flow to the purifier through its output only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from impure._util.state import load_state_dict_strict, read_state_dict
from impure._util.versions import import_torchvision
from impure.config import IMAGENET_MEAN, IMAGENET_STD
from impure.training.mixing import DEFAULT_FRACTIONS, mix_patches

__all__ = [
    "ClassifierLoss",
    "FeatureLoss",
    "LPIPSLoss",
    "PAPER_FEATURE_NODES",
    "PixelL1",
    "PurificationLoss",
    "freeze",
    "paper_feature_loss",
    "torchvision_pretrained_state",
]

# The paper's perceptual nodes in torchvision's VGG19-BN: relu4_4, relu5_4 and the fc6 ReLU, weights 30/10/10.
PAPER_FEATURE_NODES = {"features.38": 30.0, "features.51": 10.0, "classifier.1": 10.0}


def freeze(network: nn.Module) -> nn.Module:
    """Put `network` in eval mode and turn off gradients for its parameters; returns it."""
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def torchvision_pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """The default ImageNet weights of torchvision model `name`, from the local torch hub cache only.

    Raises:
        FileNotFoundError: the weights are not cached; the message says where to put them.
    """
    torchvision = import_torchvision()
    weights = torchvision.models.get_model_weights(name).DEFAULT
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not target.is_file():
        raise FileNotFoundError(
            f"the ImageNet weights of torchvision's {name} are not available offline (impure never "
            f"downloads at run time). Download {weights.url} to {target} (or set TORCH_HOME to a folder "
            "whose hub/checkpoints holds it), or pass a local weights file instead (weights='path.pth')"
        )
    return read_state_dict(target)


class PixelL1(nn.Module):
    """Mean absolute error between images, in the normalised space (divided by `std`) by default.

    Args:
        std: per-channel RGB standard deviations; the paper uses the purifier's own normalisation
            (`purifier.config.std`). None compares raw [0, 1] pixels.
    """

    def __init__(self, std: Sequence[float] | None = IMAGENET_STD):
        super().__init__()
        scale = torch.ones(3) if std is None else 1 / torch.as_tensor(std, dtype=torch.float32)
        if scale.shape != (3,) or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
            raise ValueError(f"std must be 3 positive values, got {std!r}")
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """images, targets: (N, 3, H, W) -> scalar. (The mean cancels in a difference.)"""
        return ((images - targets) * self.scale).abs().mean()


class FeatureLoss(nn.Module):
    """L1 between a frozen network's activations on two image batches, at named graph nodes.

    Args:
        network: any `nn.Module` traceable by torchvision's `create_feature_extractor`; it is frozen.
        nodes: node name -> weight, e.g. `PAPER_FEATURE_NODES` for torchvision's VGG19-BN.
        mean: per-channel mean subtracted from the [0, 1] input before the network (torchvision's
            ImageNet models need the ImageNet statistics); None when the network normalises internally.
        std: per-channel standard deviation the input is divided by, with `mean`.
    """

    def __init__(self, network: nn.Module, nodes: Mapping[str, float], *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if not nodes:
            raise ValueError("nodes must name at least one graph node with its weight")
        freeze(network)
        import_torchvision()  # checked against torch before its submodule loads
        from torchvision.models import feature_extraction

        _, available = feature_extraction.get_graph_node_names(network)
        unknown = [n for n in nodes if n not in available]
        if unknown:
            shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
            raise ValueError(f"unknown feature node(s) {unknown} of {type(network).__name__}; "
                             f"its nodes are: {shown}")
        self.weights = {str(name): float(weight) for name, weight in nodes.items()}
        self.extractor = freeze(feature_extraction.create_feature_extractor(network, return_nodes=list(self.weights)))
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                                 persistent=False)

    def train(self, mode: bool = True) -> FeatureLoss:
        """The frozen network stays in eval mode (BatchNorm running statistics, no dropout)."""
        super().train(mode)
        self.extractor.eval()
        return self

    def _features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.normalize:
            images = (images - self.mean) / self.std
        return self.extractor(images)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted mean |f(images) - f(targets)| per node; the targets' features carry no gradient."""
        with torch.no_grad():
            reference = self._features(targets)
        features = self._features(images)
        return {name: (features[name] - reference[name].to(features[name].dtype)).abs().mean()
                for name in self.weights}


def paper_feature_loss(weights: str | Path | None = None) -> FeatureLoss:
    """The paper's feature loss: torchvision VGG19-BN at relu4_4, relu5_4, fc6-ReLU with weights 30/10/10.

    Args:
        weights: a local VGG19-BN state dict file; None takes torchvision's ImageNet weights from the
            torch hub cache (never downloaded; a clear error says how to provide them).
    """
    torchvision = import_torchvision()
    state = torchvision_pretrained_state("vgg19_bn") if weights is None else read_state_dict(weights)
    network = load_state_dict_strict(torchvision.models.vgg19_bn(weights=None), state, str(weights or "vgg19_bn"))
    return FeatureLoss(network, PAPER_FEATURE_NODES, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class LPIPSLoss(nn.Module):
    """LPIPS distance (Zhang et al. 2018) from the `lpips` package, averaged over the batch.

    Args:
        net: backbone, "alex", "vgg" or "squeeze".
        pretrained_backbone: load the backbone's ImageNet weights (from the torch hub cache only). False
            uses a random backbone (tests); the calibrated linear heads ship with `lpips` either way.
    """

    _TORCHVISION_NAMES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}

    def __init__(self, net: str = "alex", pretrained_backbone: bool = True):
        super().__init__()
        if net not in self._TORCHVISION_NAMES:
            raise ValueError(f"LPIPS net must be one of {sorted(self._TORCHVISION_NAMES)}, got {net!r}")
        import lpips

        if pretrained_backbone:
            # Raises with instructions if the backbone is not cached, instead of letting lpips download it.
            torchvision_pretrained_state(self._TORCHVISION_NAMES[net])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # lpips uses torchvision's deprecated arguments
            self.metric = freeze(lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False))

    def train(self, mode: bool = True) -> LPIPSLoss:
        """The metric stays in eval mode."""
        super().train(mode)
        self.metric.eval()
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """images, targets in [0, 1], (N, 3, H, W) -> scalar mean LPIPS."""
        return self.metric(images, targets, normalize=True).mean()


class ClassifierLoss(nn.Module):
    """A frozen classifier's verdict on the purified image, to guide the purifier toward its classes.

    Args:
        classifier: maps [0, 1] images to (N, classes) logits; it is frozen.
        mode: "ce" (cross-entropy with the true labels) or "kl" (KL divergence from the classifier's
            prediction on the clean image, which needs no labels and fits the image, not the label).
    """

    def __init__(self, classifier: nn.Module, mode: str = "ce"):
        super().__init__()
        if mode not in ("ce", "kl"):
            raise ValueError(f"classifier loss mode must be 'ce' or 'kl', got {mode!r}")
        self.classifier = freeze(classifier)
        self.mode = mode

    def train(self, mode: bool = True) -> ClassifierLoss:
        """The classifier stays in eval mode."""
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, purified: torch.Tensor, targets: torch.Tensor,
                labels: torch.Tensor | None) -> torch.Tensor:
        """purified, targets: (N, 3, H, W); labels: (N,) -> scalar."""
        logits = self.classifier(purified.clamp(0, 1))
        if self.mode == "ce":
            if labels is None:
                raise ValueError("the 'ce' classifier loss needs labels; use mode='kl' for unlabelled data")
            return F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            reference = self.classifier(targets).float().log_softmax(dim=1)
        return F.kl_div(logits.float().log_softmax(dim=1), reference, log_target=True, reduction="batchmean")


class PurificationLoss(nn.Module):
    """The full training objective; `forward` returns a dict of every term and their weighted `total`.

    Args:
        pixel: the pixel term (None to leave it out).
        pixel_weight: its weight (1 in the paper).
        features: named feature losses; each node's term is weighted by the loss's own node weights.
        lpips: an optional LPIPS term, with `lpips_weight`.
        lpips_weight: weight of the LPIPS term.
        classifier: an optional classifier term on the purified image, with `classifier_weight`.
        classifier_weight: weight of the classifier term.
        mixing_patch_size: patch side for patch mixing of the feature/LPIPS input (the purifier's patch
            size, as in the paper); None compares the purified image itself.
        mixing_fractions: the fractions of input patches in a mixed image.
    """

    def __init__(self, pixel: PixelL1 | None = None, pixel_weight: float = 1.0,
                 features: Mapping[str, FeatureLoss] | None = None, lpips: LPIPSLoss | None = None,
                 lpips_weight: float = 1.0, classifier: ClassifierLoss | None = None,
                 classifier_weight: float = 1.0, mixing_patch_size: int | None = None,
                 mixing_fractions: tuple[float, ...] = DEFAULT_FRACTIONS):
        super().__init__()
        self.pixel = pixel
        self.features = nn.ModuleDict(dict(features or {}))
        self.lpips = lpips
        self.classifier = classifier
        self.pixel_weight, self.lpips_weight = pixel_weight, lpips_weight
        self.classifier_weight = classifier_weight
        self.mixing_patch_size = mixing_patch_size
        self.mixing_fractions = tuple(mixing_fractions)
        if pixel is None and not self.features and lpips is None and classifier is None:
            raise ValueError("PurificationLoss needs at least one term")

    def forward(self, purified: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All terms for one batch.

        Args:
            purified: the purifier's (un-clamped) output (N, 3, H, W).
            targets: clean images (N, 3, H, W) in [0, 1].
            inputs: the purifier's inputs, mixed into the feature/LPIPS input when mixing is on.
            labels: (N,) class indices, for the "ce" classifier term.
            generator: random generator for patch mixing.

        Returns:
            {"pixel": ..., "feature/<name>/<node>": ..., "lpips": ..., "classifier": ..., "total": ...}
            with the raw (unweighted) value of each term present and the weighted total.
        """
        terms: dict[str, torch.Tensor] = {}
        total = purified.new_zeros((), dtype=torch.float32)
        if self.pixel is not None:
            terms["pixel"] = self.pixel(purified, targets)
            total = total + self.pixel_weight * terms["pixel"]
        if self.features or self.lpips is not None:
            compared = purified
            if self.mixing_patch_size is not None:
                if inputs is None:
                    raise ValueError("patch mixing needs the purifier's inputs; pass inputs=")
                compared, _ = mix_patches(inputs, purified, self.mixing_patch_size,
                                          fractions=self.mixing_fractions, generator=generator)
            for name, loss in self.features.items():
                for node, value in loss(compared, targets).items():
                    terms[f"feature/{name}/{node}"] = value
                    total = total + loss.weights[node] * value
            if self.lpips is not None:
                terms["lpips"] = self.lpips(compared, targets)
                total = total + self.lpips_weight * terms["lpips"]
        if self.classifier is not None:
            terms["classifier"] = self.classifier(purified, targets, labels)
            total = total + self.classifier_weight * terms["classifier"]
        terms["total"] = total
        return terms
