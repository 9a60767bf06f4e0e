"""`load_defence`: one way from a defence's name to a module, for the demo, `impure purify`, the evaluation,
the benchmarks and the app. The rule "a strength or noise timesteps, not both" and its message live here."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from impure.defences.baselines import is_baseline_name, load_baseline
from impure.device import select_device, select_dtype

__all__ = ["check_strength_or_noise_t", "is_no_defence", "load_defence"]


def is_no_defence(spec: Any) -> bool:
    """None, "" or "none" (any case): no defence."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none"))


def check_strength_or_noise_t(strength: float | None, noise_t: tuple[int, int] | None, *,
                              names: tuple[str, str] = ("strength", "noise_t")) -> None:
    """A positive, finite `strength` or a `noise_t` (image, feature) pair, or neither; never both (the message
    spells the two as the caller's `names`, e.g. ("--strength", "--noise-t"))."""
    if strength is not None and noise_t is not None:
        raise ValueError(f"give {names[0]} or {names[1]}, not both")
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int | float)
                                 or not math.isfinite(strength) or strength <= 0):
        raise ValueError(f"strength must be a positive number, got {strength!r}")
    if noise_t is not None and (not isinstance(noise_t, tuple | list) or len(noise_t) != 2):
        raise ValueError(f"noise_t must be an (image, feature) pair of timesteps such as (80, 120), got {noise_t!r}")


def load_defence(
    spec: str | os.PathLike | nn.Module | None,
    *,
    strength: float | None = None,
    noise_t: tuple[int, int] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> nn.Module | None:
    """The defence `spec` names, in eval mode: None for no defence, a baseline module, or a `Purifier`.

    Args:
        spec: None or "none"; a baseline name ("jpeg75", "bits4", "median3": any quality, depth or odd
            kernel); a bundled purifier name ("impure/cifar10"), a `save_pretrained` folder or a Hub id; or an
            `nn.Module`, returned as it is (moved to `device` if given).
        strength: purify at this multiple of the purifier's saved noise timesteps (`Purifier.set_strength`).
        noise_t: purify at these (image, feature) noise timesteps instead (`Purifier.set_noise_t`).
        dtype: precision of a purifier loaded by name: a torch dtype or "fp32" / "bf16" / "fp16" / "auto"
            (as `impure.select_dtype` reads it on `device`); default as saved.
        device: "auto", "cuda", "cpu", ... or a torch.device; default the CPU.

    Raises:
        ValueError: a strength and noise timesteps both given, or either given for no defence, a baseline or
            a module (set those on a `Purifier` object yourself), or a name that is no baseline and no
            purifier (the purifier's loader names what it looked for).
    """
    check_strength_or_noise_t(strength, noise_t)
    tuned = strength is not None or noise_t is not None
    if is_no_defence(spec):
        if tuned:
            raise ValueError("a strength or noise timesteps need a purifier; the defence is 'none'")
        return None
    target = None if device is None else select_device(device)
    if isinstance(spec, nn.Module):
        if tuned:
            raise ValueError("strength and noise_t apply to a purifier loaded by name; call set_strength() or "
                             "set_noise_t() on a Purifier object instead")
        return spec if target is None else spec.to(target)
    if not isinstance(spec, str | os.PathLike):
        raise TypeError(f"a defence is None, a name or folder, or an nn.Module; got {type(spec).__name__}")
    if is_baseline_name(str(spec)):
        if tuned:
            raise ValueError(f"strength and noise_t apply to IMPure purifiers; {spec} is a baseline with its own "
                             "setting in its name (e.g. jpeg50, bits3, median5)")
        baseline = load_baseline(str(spec))
        return baseline if target is None else baseline.to(target)
    from impure.hub import Purifier  # the model (timm) loads only when a purifier is asked for

    if isinstance(dtype, str):
        dtype = select_dtype(dtype, target or torch.device("cpu"))
    load: dict[str, Any] = {"dtype": dtype}
    if target is not None:
        load["device"] = target
    purifier = Purifier.from_pretrained(spec, **load).eval()
    if strength is not None:
        purifier.set_strength(strength)
    if noise_t is not None:
        purifier.set_noise_t(*noise_t)
    return purifier
