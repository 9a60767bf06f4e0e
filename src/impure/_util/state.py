"""The one way weights are read and loaded: a state dict from a file, loaded strictly, with an error that
names every missing, unexpected and mis-shaped tensor (compare timm's `_helpers.load_state_dict` /
`load_checkpoint`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["StateDictMismatch", "load_state_dict_strict", "read_state_dict"]

# Wrappers training scripts put around a state dict in a `torch.save` file.
_WRAPPER_KEYS = ("state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a `torch.save` file (read with `weights_only=True`),
    unwrapping {"state_dict": ...} or {"model": ...}.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it cannot be read, or holds no mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read {path} as a .safetensors file: {error}") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle with objects beyond tensors, or not a checkpoint at all
        raise ValueError(f"cannot read {path} as a weights-only torch checkpoint: {error}") from error
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


class StateDictMismatch(ValueError):
    """Weights that do not fit the architecture: missing, unexpected or mis-shaped tensors."""


def _listing(items: list[str], most: int = 8) -> str:
    shown = ", ".join(items[:most])
    return shown + (f", ... ({len(items) - most} more)" if len(items) > most else "")


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor] | str | os.PathLike,
                           source: str | None = None, optional_suffixes: tuple[str, ...] = ()) -> nn.Module:
    """Load `state` (a state dict, or a file for `read_state_dict`) into `model` strictly; a `ValueError`
    names the missing, unexpected and mis-shaped tensors.

    Args:
        model: the architecture to fill.
        state: the tensors to load, or the file that holds them.
        source: where they come from, for the error message (default: the file's name).
        optional_suffixes: keys ending so may be absent (e.g. BatchNorm's "num_batches_tracked" counters);
            the model keeps its own values for them.

    Returns:
        `model`, for chaining.
    """
    if not isinstance(state, dict):
        source = source or Path(state).name
        state = read_state_dict(state)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith(optional_suffixes)]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key].shape)})"
        for key in expected if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise StateDictMismatch(f"weights from {source or 'a state dict'} do not fit {type(model).__name__}: "
                         + "; ".join(problems))
    model.load_state_dict({**expected, **state}, strict=True)
    return model
