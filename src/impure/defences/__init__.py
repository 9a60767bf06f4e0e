"""Defences by name: `load_defence` (IMPure purifiers and the baselines, at a strength or noise timesteps), the
JPEG / bit-depth / median-filter baselines, and tiling for images larger than a purifier's position table."""

from impure.defences.baselines import (
    JPEG,
    BitDepthReduction,
    MedianFilter,
    is_baseline_name,
    list_baselines,
    load_baseline,
)
from impure.defences.loading import check_strength_or_noise_t, is_no_defence, load_defence
from impure.defences.tiling import default_overlap, purify_tiled, tile_positions, tile_window

__all__ = [
    "JPEG",
    "BitDepthReduction",
    "MedianFilter",
    "check_strength_or_noise_t",
    "default_overlap",
    "is_baseline_name",
    "is_no_defence",
    "list_baselines",
    "load_baseline",
    "load_defence",
    "purify_tiled",
    "tile_positions",
    "tile_window",
]
