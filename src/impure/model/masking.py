"""The information mask: patch partitions into K groups, position windows and the noise schedule."""

from __future__ import annotations

import torch

from .._util.rng import per_sample

__all__ = ["linear_noise_schedule", "lattice_group_ids", "lattice_partition", "random_partition",
           "window_rows"]


def linear_noise_schedule(steps: int, beta_start: float, beta_end: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM's linear schedule: (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for t = 0..steps-1, float32.

    alpha_bar_t is the float32 cumulative product of (1 - beta_s) for s <= t (0-based t).
    """
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float32)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()


# Group of patch (r, c) as tile[r % n][c % n]: a 2x2 lattice for K = 4, a checkerboard for K = 2 and
# a 3x3 Latin square for K = 3.
_LATTICE_TILES = {
    2: ((0, 1), (1, 0)),
    3: ((0, 1, 2), (2, 0, 1), (1, 2, 0)),
    4: ((0, 1), (2, 3)),
}


def lattice_group_ids(rows: int, cols: int, num_groups: int) -> torch.Tensor:
    """The lattice group of each patch in raster order, shape (rows * cols,)."""
    tile = torch.tensor(_LATTICE_TILES[num_groups])
    n = tile.shape[0]
    r = torch.arange(rows)[:, None] % n
    c = torch.arange(cols)[None, :] % n
    return tile[r, c].reshape(-1)


def lattice_partition(rows: int, cols: int, num_groups: int) -> torch.Tensor:
    """Raster patch indices ordered group by group, raster order inside a group: shape (L,).

    Positions [g * L/K, (g+1) * L/K) list group g's patches.

    Raises:
        ValueError: the groups of this grid would not be of equal size.
    """
    groups = lattice_group_ids(rows, cols, num_groups)
    counts = torch.bincount(groups, minlength=num_groups)
    if bool((counts != counts[0]).any()):
        raise ValueError(
            f"a {rows}x{cols} patch grid cannot be split into {num_groups} equal lattice groups "
            f"(sizes {counts.tolist()}); use a grid whose sides are multiples of "
            f"{len(_LATTICE_TILES[num_groups])}"
        )
    return torch.sort(groups, stable=True).indices


def random_partition(batch: int, num_patches: int, num_groups: int, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """A random partition per sample: (batch, L) raster indices, group g at [g * L/K, (g+1) * L/K)."""
    if num_patches % num_groups:
        raise ValueError(f"{num_patches} patches cannot be split into {num_groups} equal groups")
    scores = per_sample(lambda shape: torch.rand(shape, generator=generator, device=device), (batch, num_patches))
    return scores.argsort(dim=1)


def window_rows(rows: int, cols: int, grid_size: int, offsets: torch.Tensor) -> torch.Tensor:
    """Position-table rows of each patch for a window at `offsets`.

    Args:
        rows: patch rows of the input.
        cols: patch columns of the input.
        grid_size: side G of the position table.
        offsets: (B, 2) or (1, 2) integer (row, column) offsets of the window in the table.

    Returns:
        (B, rows * cols) indices into a (G * G, C) table, patches in raster order.
    """
    r = torch.arange(rows, device=offsets.device)[:, None]
    c = torch.arange(cols, device=offsets.device)[None, :]
    index = (r + offsets[:, 0, None, None]) * grid_size + (c + offsets[:, 1, None, None])
    return index.reshape(offsets.shape[0], rows * cols)
