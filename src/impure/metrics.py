"""Per-image metrics shared by the evaluation, training validation and the demo: correctness, residual
perturbation, PSNR."""

from __future__ import annotations

import torch

__all__ = ["correct", "linf_norm", "l2_norm", "psnr"]


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean (N,) vector: whether each image's top-1 prediction is its label."""
    return logits.argmax(dim=1) == labels


def linf_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per-image ℓ∞ norm (N,) of a batch of differences (N, ...)."""
    return delta.flatten(1).abs().amax(dim=1)


def l2_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per-image ℓ2 norm (N,) of a batch of differences (N, ...), on the [0, 1] pixel scale."""
    return delta.flatten(1).norm(p=2, dim=1)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (N,) of `images` against `reference`, both in [0, 1]; inf where identical."""
    mse = (images.float() - reference.float()).flatten(1).pow(2).mean(dim=1)
    return 10 * torch.log10(1 / mse)
