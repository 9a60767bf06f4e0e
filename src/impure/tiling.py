"""Purify images larger than a purifier's position table by cutting them into tiles."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_images

__all__ = ["purify_tiled"]


def purify_tiled(purifier: nn.Module, images: torch.Tensor, tile: int, batch_size: int = 256,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Purify (N, 3, H, W) images of any size as non-overlapping `tile` x `tile` tiles.

    The images are padded (replicate) to a multiple of `tile`, every tile of every image is purified in
    batches of `batch_size` tiles, and the tiles are put back and cropped to (H, W).

    Args:
        purifier: maps (n, 3, tile, tile) images in [0, 1] to purified ones; called with `generator=`.
        images: (N, 3, H, W) float images in [0, 1].
        tile: tile side in pixels, e.g. the purifier's nominal `config.image_size`.
        batch_size: tiles per purifier call (bounds memory).
        generator: random generator for a stochastic purifier.
    """
    check_images(images)
    if tile <= 0 or batch_size <= 0:
        raise ValueError(f"tile and batch_size must be positive, got {tile} and {batch_size}")
    count, channels, height, width = images.shape
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    padded = F.pad(images, (0, cols * tile - width, 0, rows * tile - height), mode="replicate")
    # (N, C, rows, tile, cols, tile) -> (N * rows * cols, C, tile, tile)
    tiles = padded.view(count, channels, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(-1, channels, tile, tile)
    purified = torch.cat([purifier(chunk, generator=generator) for chunk in tiles.split(batch_size)])
    purified = purified.view(count, rows, cols, channels, tile, tile).permute(0, 3, 1, 4, 2, 5)
    return purified.reshape(count, channels, rows * tile, cols * tile)[..., :height, :width]
