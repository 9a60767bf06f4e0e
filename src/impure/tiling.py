"""Purify images larger than a purifier's position table by cutting them into overlapping tiles that are
blended with a smooth window, so that no seam shows where tiles meet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._util.checks import check_images

__all__ = ["purify_tiled", "tile_window"]


def tile_window(tile: int, device: torch.device | None = None) -> torch.Tensor:
    """The (tile, tile) blending window sin²(πx/tile)·sin²(πy/tile): tiles overlapping by half of `tile`
    add up to exactly 1 everywhere, so the blend is a weighted average with no jump at any tile edge."""
    ramp = torch.sin(math.pi * (torch.arange(tile, device=device, dtype=torch.float64) + 0.5) / tile) ** 2
    return (ramp[:, None] * ramp[None, :]).float()


def purify_tiled(purifier: nn.Module, images: torch.Tensor, tile: int, batch_size: int = 256,
                 generator: torch.Generator | None = None, progress: bool | None = None) -> torch.Tensor:
    """Purify (N, 3, H, W) images of any size as `tile` x `tile` tiles that overlap by half a tile.

    The images are padded (reflect, or replicate where too small) by half a tile on every side and to a
    whole number of half tiles; every tile is purified, in batches of `batch_size` tiles, weighted by
    `tile_window` and added back, and the result is cropped to (H, W). `tile` must be even.

    Args:
        purifier: maps (n, 3, tile, tile) images in [0, 1] to purified ones; called with `generator=`.
        images: (N, 3, H, W) float images in [0, 1].
        tile: tile side in pixels, e.g. the purifier's nominal `config.image_size`.
        batch_size: tiles per purifier call (bounds memory).
        generator: random generator for a stochastic purifier.
        progress: show a progress bar over the tile batches (default: when there are more than 4).
    """
    check_images(images)
    if tile <= 0 or tile % 2 or batch_size <= 0:
        raise ValueError(f"tile must be a positive even number and batch_size positive, got {tile} and "
                         f"{batch_size}")
    count, channels, height, width = images.shape
    half = tile // 2
    rows, cols = math.ceil(height / half) + 1, math.ceil(width / half) + 1  # tile positions per axis
    pad = (half, (cols + 1) * half - width - half, half, (rows + 1) * half - height - half)
    mode = "reflect" if min(height, width) >= tile else "replicate"  # reflect needs pads shorter than the image
    padded = F.pad(images, pad, mode=mode)
    size = padded.shape[-2:]
    tiles = F.unfold(padded, tile, stride=half)  # (N, C * tile * tile, rows * cols)
    tiles = tiles.transpose(1, 2).reshape(-1, channels, tile, tile)
    window = tile_window(tile, images.device).to(images.dtype)
    chunks = tiles.split(batch_size)
    show = len(chunks) > 4 if progress is None else progress
    purified = torch.cat([purifier(chunk, generator=generator) * window
                          for chunk in tqdm(chunks, desc="tiles", unit="batch", disable=not show, leave=False)])
    columns = purified.reshape(count, -1, channels * tile * tile).transpose(1, 2)
    blended = F.fold(columns, size, tile, stride=half)
    weights = F.fold(window.reshape(1, tile * tile, 1).expand(1, -1, rows * cols), size, tile, stride=half)
    return (blended / weights)[..., half:half + height, half:half + width]
