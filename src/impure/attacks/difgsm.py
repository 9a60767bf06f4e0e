"""DI-FGSM and M-DI²-FGSM (Xie et al. 2019, "Improving Transferability of Adversarial Examples with Input
Diversity"): iterative FGSM on randomly resized and padded copies of the input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._util.checks import check_number
from .iterative import IterativeSignAttack

__all__ = ["DIFGSM", "input_diversity"]


def _axis_grid(size: int, canvas: int, content: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sampling coordinates along one axis for every image: content (N,) pixels placed at offset (N,).

    Returns normalised source coordinates (N, canvas) for `grid_sample` and a mask (N, canvas) of the
    canvas pixels covered by the content. Bilinear resizing with half-pixel centres, as `F.interpolate`.
    """
    position = torch.arange(canvas, device=content.device, dtype=torch.float32)[None] + 0.5 - offset[:, None]
    inside = (position > 0) & (position < content[:, None])
    source = (position * (size / content[:, None]) - 0.5).clamp(0, size - 1)
    return (2 * source + 1) / size - 1, inside


def input_diversity(
    images: torch.Tensor, resize_rate: float, diversity_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """With probability `diversity_prob` per image, resize it to a random size between its own and
    `resize_rate` times it, and zero-pad it at a random offset onto the canvas.

    The canvas is the input size when `resize_rate` < 1 (other images pass unchanged), or `resize_rate`
    times it when > 1 (other images are padded without resizing). Vectorised with one `grid_sample`.

    Args:
        images: (N, C, H, W).
        resize_rate: ratio of the extreme resized side to the original.
        diversity_prob: probability that an image is transformed.
        generator: source of the random sizes, offsets and choices.
    """
    n, _, height, width = images.shape
    canvas_h, canvas_w = max(height, int(height * resize_rate)), max(width, int(width * resize_rate))
    draws = torch.rand(4, n, generator=generator, device=generator.device).to(images.device)
    diverse = draws[0] < diversity_prob
    low_h, low_w = max(1, min(height, int(height * resize_rate))), max(1, min(width, int(width * resize_rate)))
    high_h, high_w = max(height, int(height * resize_rate)), max(width, int(width * resize_rate))
    # One draw sets both sides, so the aspect ratio is (nearly) kept; upper bounds are exclusive.
    content_h = torch.where(diverse, low_h + (draws[1] * (high_h - low_h)).floor(), torch.full_like(draws[1], height))
    content_w = torch.where(diverse, low_w + (draws[1] * (high_w - low_w)).floor(), torch.full_like(draws[1], width))
    # Offsets in [0, free side) as in the paper's code, so content never touches the bottom-right edge.
    top = (draws[2] * (canvas_h - content_h)).floor()
    left = (draws[3] * (canvas_w - content_w)).floor()
    rows, row_inside = _axis_grid(height, canvas_h, content_h, top)
    cols, col_inside = _axis_grid(width, canvas_w, content_w, left)
    grid = torch.stack(torch.broadcast_tensors(cols[:, None, :], rows[:, :, None]), dim=-1).to(images.dtype)
    resized = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    resized = resized * (row_inside[:, :, None] & col_inside[:, None, :])[:, None].to(images.dtype)
    if (canvas_h, canvas_w) == (height, width):
        resized = torch.where(diverse[:, None, None, None], resized, images)
    return resized


class DIFGSM(IterativeSignAttack):
    """Iterative FGSM whose gradients are taken on randomly resized and padded inputs; with `decay` > 0 it
    is M-DI²-FGSM (momentum plus input diversity).

    Args:
        model: classifier returning logits for images in [0, 1] (of the canvas size if `resize_rate` > 1).
        eps: ℓ∞ radius (default 8/255).
        alpha: step size (default 2/255).
        steps: number of steps (default 10).
        decay: momentum decay factor (default 0.0; 1.0 gives M-DI²-FGSM).
        resize_rate: extreme resize ratio (default 0.9: shrink to 90-100 % and pad back).
        diversity_prob: probability of transforming each image at each step (default 0.5).
        random_start: start from a random point of the ε-ball (default False).
        seed: randomness of the transformations and the start.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        decay: float = 0.0,
        resize_rate: float = 0.9,
        diversity_prob: float = 0.5,
        random_start: bool = False,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, alpha, steps, decay, random_start, seed=seed, generator=generator)
        self.resize_rate = check_number("resize_rate", resize_rate, high=4.0)
        self.diversity_prob = check_number("diversity_prob", diversity_prob, high=1.0, low_open=False)

    def _transform(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return input_diversity(images, self.resize_rate, self.diversity_prob, generator)
