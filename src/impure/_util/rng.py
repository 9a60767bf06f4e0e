"""Per-sample random draws that do not depend on how a batch is split across processes.

In data-parallel training each process holds a slice of the global batch. Inside `batch_slice(offset,
total)`, `per_sample` draws a tensor for all `total` samples and returns this process's slice, so every
sample gets the same noise, partition, augmentation and attack start whatever the number of processes
(the generators, seeded alike in every process, stay in step because every process draws the same shapes).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["batch_slice", "per_sample"]

_slice = contextvars.ContextVar("impure_batch_slice", default=None)


@contextmanager
def batch_slice(offset: int, total: int) -> Iterator[None]:
    """Within: this process's batch holds samples [offset, offset + local batch) of `total`."""
    token = _slice.set((offset, total))
    try:
        yield
    finally:
        _slice.reset(token)


def per_sample(draw: Callable[[tuple[int, ...]], torch.Tensor], shape: tuple[int, ...], dim: int = 0) -> torch.Tensor:
    """`draw(shape)`, where `shape[dim]` counts samples: inside `batch_slice`, the matching slice of the
    draw for the whole global batch.

    Args:
        draw: makes a random tensor of a given shape, e.g. `lambda s: torch.rand(s, generator=g)`.
        shape: the local shape.
        dim: the dimension that counts samples.
    """
    where = _slice.get()
    if where is None:
        return draw(tuple(shape))
    offset, total = where
    full = list(shape)
    full[dim] = total
    return draw(tuple(full)).narrow(dim, offset, shape[dim])
