"""CIFAR-10 ResNets (He et al. 2016, "Deep Residual Learning", the 6n+2 CIFAR variant with option-A shortcuts)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ._loading import load_weights

__all__ = ["CifarResNet", "cifar_resnet20", "cifar_resnet56"]

# The shared checkpoints were trained on inputs normalised with ImageNet statistics.


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut; where the shape changes the shortcut subsamples and zero-pads."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.reshapes = stride != 1 or in_channels != channels
        self.pad = (channels - in_channels) // 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, or every other pixel with `pad` zero channels on each side (no parameters)."""
        if not self.reshapes:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet with 6n+2 layers taking RGB images in [0, 1]; it normalises internally.

    Args:
        blocks_per_stage: n, the number of BasicBlocks in each of the three stages (3 for ResNet-20,
            9 for ResNet-56).
        num_classes: outputs of the final linear layer.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, channels, stride)]
        layers += [BasicBlock(channels, channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) RGB in [0, 1] -> logits (N, num_classes)."""
        x = (images - self.mean) / self.std
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(x.mean(dim=(2, 3)))


def _build(blocks_per_stage: int, weights: str | os.PathLike | None) -> CifarResNet:
    model = CifarResNet(blocks_per_stage)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def cifar_resnet20(weights: str | os.PathLike | None = None) -> CifarResNet:
    """ResNet-20 for CIFAR-10, in eval mode.

    Args:
        weights: a `.safetensors` state dict to load strictly (e.g. `cifar10_resnet20.safetensors`), or
            None for random initialisation.
    """
    return _build(3, weights)


def cifar_resnet56(weights: str | os.PathLike | None = None) -> CifarResNet:
    """ResNet-56 for CIFAR-10, in eval mode.

    Args:
        weights: a `.safetensors` state dict to load strictly (e.g. `cifar10_resnet56.safetensors`), or
            None for random initialisation.
    """
    return _build(9, weights)
