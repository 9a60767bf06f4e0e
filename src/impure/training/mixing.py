"""Patch mixing for the IMPure feature loss: some patches from the input, the rest from the purifier.

In fine-tuning (Liu et al., arXiv 2311.15339) the feature loss is taken on a *mixed* image: per batch a
fraction f in {1/2, 1/3, 1/4} is drawn, and in each sample a random f of the patches (a different random
set per sample) keeps the input's pixels while the others take the purification. Unlike the reference,
every patch position can be chosen (it never picks the last permuted position).
"""

from __future__ import annotations

import torch

from impure._util.rng import per_sample

__all__ = ["DEFAULT_FRACTIONS", "mix_patches", "patch_mixing_mask"]

DEFAULT_FRACTIONS = (1 / 2, 1 / 3, 1 / 4)


def patch_mixing_mask(batch: int, height: int, width: int, patch_size: int, *,
                      fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """A boolean pixel mask (batch, 1, height, width): True where the mixed image takes the input.

    One fraction f is drawn uniformly from `fractions` for the whole batch; every sample then marks
    round(f * L) of its L patches, chosen uniformly at random and independently of the other samples.
    Patches at the right and bottom edges may be partial when the size is not a multiple of the patch.

    Args:
        batch: number of samples.
        height: image height in pixels.
        width: image width in pixels.
        patch_size: side of a square patch in pixels.
        fractions: the fractions of input patches to draw from.
        generator: random generator (on `device`) for reproducible masks.
        device: where to build the mask.
    """
    if patch_size <= 0 or height <= 0 or width <= 0 or batch <= 0:
        raise ValueError(f"batch, height, width and patch_size must be positive, got "
                         f"{batch}, {height}, {width}, {patch_size}")
    if not fractions or any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must be a non-empty tuple of values in [0, 1], got {fractions!r}")
    rows, cols = -(-height // patch_size), -(-width // patch_size)
    patches = rows * cols
    choice = torch.randint(len(fractions), (1,), generator=generator, device=device)
    count = round(fractions[int(choice)] * patches)
    # Ranking i.i.d. uniforms gives every sample its own uniformly random set of `count` patches.
    scores = per_sample(lambda shape: torch.rand(shape, generator=generator, device=device), (batch, patches))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    chosen = (ranks < count).view(batch, 1, rows, cols)
    pixels = chosen.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return pixels[:, :, :height, :width]


def mix_patches(inputs: torch.Tensor, purified: torch.Tensor, patch_size: int, *,
                fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix input and purified patches; gradients reach `purified` only through its kept patches.

    Args:
        inputs: the purifier's input (N, 3, H, W), e.g. adversarial images; no gradient flows into it.
        purified: the purifier's output (N, 3, H, W).
        patch_size: side of a mixing patch in pixels (the purifier's patch size).
        fractions: the fractions of input patches to draw from, one per batch.
        generator: random generator (on the tensors' device) for reproducible mixing.

    Returns:
        The mixed images (N, 3, H, W) and the boolean mask (N, 1, H, W), True where the input was taken.
    """
    if inputs.shape != purified.shape or inputs.ndim != 4:
        raise ValueError(f"inputs {tuple(inputs.shape)} and purified {tuple(purified.shape)} must be equal "
                         "(N, C, H, W) shapes")
    batch, _, height, width = inputs.shape
    mask = patch_mixing_mask(batch, height, width, patch_size, fractions=fractions, generator=generator,
                             device=inputs.device)
    return torch.where(mask, inputs.detach().to(purified.dtype), purified), mask
