"""Resumable batch order and batch augmentation: the data position is a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from impure._util.rng import per_sample
from impure.data import fetch_batch

__all__ = ["BatchPlan", "augment"]


class _BatchView(Dataset):
    """A dataset whose items are whole batches: `view[list_of_indices]` -> stacked tensors."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        return fetch_batch(self.dataset, indices)


class BatchPlan:
    """Which samples each process reads at each micro-step.

    Every epoch is a fresh permutation drawn from (seed, epoch); micro-step m of the run reads slice
    `rank` of the m-th global batch. Since the plan depends only on m, a resumed run reads exactly what
    the uninterrupted one would have. Incomplete last batches of an epoch are dropped.

    Args:
        count: number of samples in the dataset.
        batch_size: samples per process per micro-step.
        world_size: number of processes.
        rank: this process.
        seed: the run's seed.
    """

    def __init__(self, count: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0):
        self.global_batch = batch_size * world_size
        if count < self.global_batch:
            raise ValueError(f"the training set has {count} images, fewer than one global batch "
                             f"({batch_size} x {world_size} processes); lower optim.batch_size")
        self.count, self.batch_size, self.rank, self.seed = count, batch_size, rank, seed
        self.batches_per_epoch = count // self.global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def position(self, micro_step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of `micro_step`."""
        return divmod(micro_step, self.batches_per_epoch)

    def indices(self, micro_step: int) -> list[int]:
        """The sample indices this process reads at `micro_step`."""
        epoch, batch = self.position(micro_step)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.count, generator=generator)
        start = batch * self.global_batch + self.rank * self.batch_size
        return self._order[start:start + self.batch_size].tolist()

    def batches(self, dataset: Dataset, start: int,
                num_workers: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Endless batches of `dataset` from micro-step `start`, decoded by `num_workers` processes."""

        def order() -> Iterator[list[int]]:
            micro_step = start
            while True:
                yield self.indices(micro_step)
                micro_step += 1

        loader = DataLoader(_BatchView(dataset), sampler=order(), batch_size=None, num_workers=num_workers,
                            persistent_workers=False)
        return iter(loader)


def augment(tensors: tuple[torch.Tensor, ...], *, hflip: bool, crop_padding: int,
            generator: torch.Generator | None,
            crop_scale: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, ...]:
    """Apply one random resized crop, flip and translation per sample, the same to every tensor of the tuple.

    Args:
        tensors: image batches (N, C, H, W) of one shape, e.g. (adversarial, clean).
        hflip: flip half of the samples horizontally.
        crop_padding: translate each sample by up to this many pixels (reflection padding); 0: off.
        generator: CPU random generator.
        crop_scale: crop each sample to a random fraction in [low, high] of its area (aspect 3/4 to 4/3)
            and resize it back (bilinear); (1, 1): off.
    """
    first = tensors[0]
    batch, _, height, width = first.shape
    if tuple(crop_scale) != (1.0, 1.0):
        tensors = _resized_crops(tensors, crop_scale, generator)
    if hflip:
        flip = per_sample(lambda shape: torch.rand(shape, generator=generator), (batch,)) < 0.5
        flip = flip.to(first.device).view(batch, 1, 1, 1)
        tensors = tuple(torch.where(flip, t.flip(-1), t) for t in tensors)
    if crop_padding > 0:
        shift = per_sample(lambda shape: torch.randint(0, 2 * crop_padding + 1, shape, generator=generator),
                           (2, batch), dim=1).to(first.device)
        rows = (shift[0][:, None] + torch.arange(height, device=first.device))[:, None, :, None]
        cols = (shift[1][:, None] + torch.arange(width, device=first.device))[:, None, None, :]
        samples = torch.arange(batch, device=first.device)[:, None, None, None]
        channels = torch.arange(first.shape[1], device=first.device)[None, :, None, None]
        pad = (crop_padding,) * 4
        tensors = tuple(torch.nn.functional.pad(t, pad, mode="reflect")[samples, channels, rows, cols]
                        for t in tensors)
    return tensors


def _resized_crops(tensors: tuple[torch.Tensor, ...], crop_scale: tuple[float, float],
                   generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """One random crop per sample (area fraction in `crop_scale`, aspect 3/4 to 4/3, anywhere inside the
    image), resized back to the full size by bilinear sampling: one `grid_sample` for the whole batch."""
    first = tensors[0]
    low, high = crop_scale

    def crop_boxes(shape: tuple[int, ...]) -> torch.Tensor:
        """(samples, 2, 3) affine maps from output to input grid coordinates. Computed for the global
        batch before a process takes its slice, so that the arithmetic too is the same in every process."""
        draws = torch.rand((shape[0], 4), generator=generator)
        area = low + (high - low) * draws[:, 0]
        aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * draws[:, 1])  # width / height, log-uniform
        width = torch.sqrt(area * aspect).clamp(max=1.0)  # crop sides as fractions of the image's
        height = torch.sqrt(area / aspect).clamp(max=1.0)
        centre_x = (1 - width) * (2 * draws[:, 2] - 1)  # in [-1, 1] grid units: the crop inside the image
        centre_y = (1 - height) * (2 * draws[:, 3] - 1)
        zero = torch.zeros_like(width)
        return torch.stack([torch.stack([width, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1)

    theta = per_sample(crop_boxes, (first.shape[0], 2, 3)).to(first.device, first.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(first.shape), align_corners=False)
    return tuple(torch.nn.functional.grid_sample(t, grid.to(t.dtype), mode="bilinear", padding_mode="border",
                                                 align_corners=False) for t in tensors)
