"""Validation during training: reconstruction error, PSNR and (optionally) accuracy through the purifier."""

from __future__ import annotations

import torch
from torch import nn

from impure._util.modes import eval_mode
from impure.metrics import psnr

__all__ = ["validate"]

_MAX_PSNR = 100.0  # dB, for an image reproduced exactly (its PSNR is infinite): keeps the mean finite


@torch.no_grad()
def validate(purifier: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, *,
             classifier: nn.Module | None = None, batch_size: int = 128, seed: int = 0) -> dict[str, float]:
    """Purify `inputs` in eval mode and compare with `targets`.

    Args:
        purifier: the purifier (its train/eval mode is restored afterwards).
        inputs: images to purify (N, 3, H, W) in [0, 1], on the purifier's device or the CPU.
        targets: the clean images (N, 3, H, W).
        labels: (N,) class indices, for the accuracy.
        classifier: if given, accuracy of classifier(purified) is reported.
        batch_size: images per forward pass.
        seed: seed of the purifier's noise, so that successive validations are comparable.

    Returns:
        {"l1": mean absolute pixel error, "psnr": mean per-image PSNR in dB, "accuracy": ... (if any)}.
    """
    device = next(purifier.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    l1, total_psnr, correct = 0.0, 0.0, 0
    with eval_mode(purifier):
        for start in range(0, inputs.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            purified = purifier(inputs[chunk].to(device), generator=generator).float()
            target = targets[chunk].to(device).float()
            l1 += float((purified - target).abs().mean(dim=(1, 2, 3)).sum())
            total_psnr += float(psnr(purified, target).clamp(max=_MAX_PSNR).sum())
            if classifier is not None:
                predicted = classifier(purified).argmax(dim=1)
                correct += int((predicted == labels[chunk].to(device)).sum())
    count = inputs.shape[0]
    metrics = {"l1": l1 / count, "psnr": total_psnr / count}
    if classifier is not None:
        metrics["accuracy"] = correct / count
    return metrics
