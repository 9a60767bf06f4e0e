"""BPDA's straight-through estimator (Athalye, Carlini, Wagner 2018): a transform's exact output forward,
the identity's gradient backward."""

from __future__ import annotations

import torch

__all__ = ["straight_through"]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        # A copy, not `transformed` itself: an output that is an input would be a view, and a view made
        # inside a custom Function cannot be modified in place by the caller.
        return transformed.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


def straight_through(images: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """`transformed`, exactly, in the forward pass; its gradient passes to `images` unchanged (BPDA).

    Args:
        images: the transform's input (N, C, H, W); it receives the gradient.
        transformed: the transform's output, the same shape; it receives no gradient.
    """
    if transformed.shape != images.shape:
        raise ValueError(
            f"a straight-through transform must keep the shape: input {tuple(images.shape)}, "
            f"output {tuple(transformed.shape)}"
        )
    return _StraightThrough.apply(images, transformed)
