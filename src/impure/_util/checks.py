"""Validation of user-facing tensors: clear errors instead of silent wrong answers."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["check_budget", "check_count", "check_images", "check_integer", "check_labels", "check_number",
           "inputs_validated", "should_check_inputs"]

_inputs_validated = contextvars.ContextVar("impure_inputs_validated", default=False)


@contextmanager
def inputs_validated() -> Iterator[None]:
    """Within this context models skip their input checks: the caller has validated its images and keeps
    them valid (an attack loop projects every iterate into [0, 1]), so no check syncs with the device."""
    token = _inputs_validated.set(True)
    try:
        yield
    finally:
        _inputs_validated.reset(token)


def should_check_inputs() -> bool:
    """False inside `inputs_validated()` and while torch.compile traces (a check reads values back)."""
    return not _inputs_validated.get() and not torch.compiler.is_compiling()

# Float rounding after resizing or colour conversion can leave values a hair outside [0, 1].
_RANGE_SLACK = 1e-4


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise if `images` is not a non-empty float batch (N, 3, H, W) with finite values in [0, 1].

    Args:
        images: the tensor to check.
        name: how the tensor is called in error messages.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}; "
            "convert uint8 images with `images.float() / 255`"
        )
    if images.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}; "
            "add a batch dimension with `images.unsqueeze(0)` for a single image"
        )
    if images.shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dimension 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has an empty spatial size {tuple(images.shape[2:])}")
    low, high = torch.stack(torch.aminmax(images.detach())).tolist()  # one read-back; NaN propagates
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        hint = " (it looks like 0-255 values: divide by 255)" if high > 2 else ""
        raise ValueError(f"{name} must have values in [0, 1], got range [{low:.4g}, {high:.4g}]{hint}")


def check_labels(labels: torch.Tensor, batch_size: int, name: str = "labels") -> None:
    """Raise if `labels` is not an integer vector of `batch_size` class indices."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape ({batch_size},) to match the images, got {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got minimum {int(labels.min())}")


def check_number(
    name: str, value: float, *, low: float = 0.0, high: float = math.inf, low_open: bool = True
) -> float:
    """Return `value` as a float after checking it is a real number in (low, high] (or [low, high])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_integer(name: str, value: int, low: int = 1, high: int | None = None, *, type_error: bool = False) -> int:
    """Return `value` after checking it is an integer (not a bool) in [low, high].

    Raises:
        ValueError: "{name} must be an integer >= {low}, got {value!r}" (or "in [low, high]"), also for a value
            that is not an integer; with `type_error`, a `TypeError` for that ("{name} must be an int, got
            float") and "{name} must be >= {low}, got {value}" for a value out of range, as the attacks say it.
    """
    bound = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        if type_error:
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {bound}, got {value}" if type_error else
                         f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_count(name: str, value: int, minimum: int = 1) -> int:
    """An attack's count argument (steps, restarts, ...): `check_integer` with its type errors."""
    return check_integer(name, value, minimum, type_error=True)


def check_budget(name: str, value: float) -> float:
    """Check a perturbation size on the [0, 1] image scale; catch the common 0-255 slip."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 < value <= 255:
        raise ValueError(f"{name} must be in (0, 1] on the [0, 1] image scale, got {value}; did you mean {value}/255?")
    return check_number(name, value, high=1.0)
