"""Purify images larger than a purifier's position table by cutting them into tiles that overlap by a few pixels
and are blended there with a smooth window, so that no seam shows where tiles meet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from impure._util.checks import check_images

__all__ = ["default_overlap", "purify_tiled", "tile_positions", "tile_window"]




def default_overlap(tile: int) -> int:
    """The least overlap of neighbouring tiles by default: a tenth of the tile (3 px for 32-px tiles), so that a
    large image's pixels are purified about 1.2-1.3 times each, where half-tile overlaps purified them 4 times."""
    return max(1, tile // 10)


def tile_window(tile: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """The (tile, tile) blending weights: 1 inside, rising as sin² over the `overlap` pixels at each edge, so that
    where tiles overlap the blend slides smoothly from one to the next (with `overlap = tile / 2`, sin²(πx/tile)).
    Never 0, so that a pixel only one tile covers keeps that tile's value."""
    x = torch.arange(tile, device=device, dtype=torch.float64) + 0.5
    ramp = torch.sin(math.pi / 2 * torch.clamp(torch.minimum(x, tile - x) / overlap, max=1.0)) ** 2
    return (ramp[:, None] * ramp[None, :]).float()


def tile_positions(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis start: as few as cover `length` with at least `overlap` pixels between
    neighbours, spread evenly from 0 to `length - tile` (one tile at 0 if the axis is no longer than a tile)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def purify_tiled(purifier: nn.Module, images: torch.Tensor, tile: int, batch_size: int = 256,
                 generator: torch.Generator | None = None, progress: bool | None = None,
                 overlap: int | None = None) -> torch.Tensor:
    """Purify (N, 3, H, W) images of any size as `tile` x `tile` tiles that overlap by about `overlap` pixels.

    Images smaller than a tile are padded (replicate) and cropped back. Every tile is purified, in batches of
    `batch_size` tiles, weighted by `tile_window` and added back; each pixel is the weighted average of the
    tiles that cover it.

    Args:
        purifier: maps (n, 3, tile, tile) images in [0, 1] to purified ones; called with `generator=`.
        images: (N, 3, H, W) float images in [0, 1].
        tile: tile side in pixels, e.g. the purifier's nominal `config.image_size`.
        batch_size: tiles per purifier call (bounds memory).
        generator: random generator for a stochastic purifier.
        progress: show a progress bar over the tile batches (default: when there are more than 4).
        overlap: the least overlap of neighbouring tiles, in [1, tile / 2]; default `default_overlap(tile)` (each
            pixel purified about 1.2-1.3 times; tile / 2 purifies it 4 times).
    """
    check_images(images)
    overlap = default_overlap(tile) if overlap is None else overlap
    if tile <= 1 or batch_size <= 0 or not 1 <= overlap <= tile // 2:
        raise ValueError(f"tile must be at least 2, batch_size positive and overlap in [1, tile / 2]; got tile {tile}, "
                         f"batch_size {batch_size}, overlap {overlap}")
    count, channels, height, width = images.shape
    padded = F.pad(images, (0, max(0, tile - width), 0, max(0, tile - height)), mode="replicate")
    rows = tile_positions(padded.shape[-2], tile, overlap)
    cols = tile_positions(padded.shape[-1], tile, overlap)
    corners = [(r, c) for r in rows for c in cols]
    tiles = torch.stack([padded[:, :, r:r + tile, c:c + tile] for r, c in corners], dim=1)  # (N, T, C, t, t)
    chunks = tiles.flatten(0, 1).split(batch_size)
    show = len(chunks) > 4 if progress is None else progress
    purified = torch.cat([purifier(chunk, generator=generator)
                          for chunk in tqdm(chunks, desc="tiles", unit="batch", disable=not show, leave=False)])
    purified = purified.view(count, len(corners), channels, tile, tile)
    window = tile_window(tile, overlap, images.device).to(images.dtype)
    blended = torch.zeros_like(padded)
    weights = torch.zeros(padded.shape[-2:], dtype=images.dtype, device=images.device)
    for index, (r, c) in enumerate(corners):
        blended[:, :, r:r + tile, c:c + tile] += purified[:, index] * window
        weights[r:r + tile, c:c + tile] += window
    return (blended / weights)[..., :height, :width]
