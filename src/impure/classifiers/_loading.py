"""Strict loading of a classifier's weights from a .safetensors file, with errors that name every problem."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..hub import load_state_dict_strict

__all__ = ["load_weights"]

# BatchNorm's step counter is not a weight; checkpoints converted from other frameworks omit it.
_OPTIONAL_SUFFIX = "num_batches_tracked"


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load `path` into `model` strictly: every key present, none extra, every shape equal.

    Args:
        model: the architecture to fill.
        path: a `.safetensors` file holding its state dict.

    Returns:
        `model`, for chaining.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not safetensors or does not match the architecture (the message lists the
            missing keys, the unexpected keys and the shape mismatches).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights not found: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {path} as a .safetensors file: {error}") from error

    try:
        return load_state_dict_strict(model, state, path.name, optional_suffixes=(_OPTIONAL_SUFFIX,))
    except ValueError as error:
        raise ValueError(f"{error} (is it the checkpoint of another architecture?)") from None
