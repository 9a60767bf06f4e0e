"""Strict loading of a classifier's weights from a file, with errors that name every problem."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .._util.state import StateDictMismatch, load_state_dict_strict

__all__ = ["load_weights"]

# BatchNorm's step counter is not a weight; checkpoints converted from other frameworks omit it.
_OPTIONAL_SUFFIX = "num_batches_tracked"


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load `path` into `model` strictly: every key present, none extra, every shape equal.

    Args:
        model: the architecture to fill.
        path: a `.safetensors` file (or a weights-only `torch.save` file) holding its state dict.

    Returns:
        `model`, for chaining.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file cannot be read or does not match the architecture (the message lists the
            missing keys, the unexpected keys and the shape mismatches).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights not found: {path}")
    try:
        return load_state_dict_strict(model, path, optional_suffixes=(_OPTIONAL_SUFFIX,))
    except StateDictMismatch as error:
        raise StateDictMismatch(f"{error} (is it the checkpoint of another architecture?)") from None
