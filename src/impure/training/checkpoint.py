"""Atomic training checkpoints: a file is replaced in one step, so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from .._util.atomic import atomic_path
from .._util.state import load_state_dict_strict
from ..config import PurifierConfig
from ..hub import Purifier

__all__ = ["atomic_save", "config_differences", "load_checkpoint", "purifier_from_checkpoint"]

CHECKPOINT_FORMAT = 1


def atomic_save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """`torch.save` `state` to `path` through a temporary file in the same folder and `os.replace`."""
    with atomic_path(path) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `atomic_save` (tensors and plain values only: `weights_only=True`).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is damaged or not an impure training checkpoint.
    """
    hint = ("continue from the last committed weights instead: set model.init to the bundled model "
            "(e.g. impure/cifar10) in a new output_dir")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training checkpoint at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupt file
        raise ValueError(f"cannot read the training checkpoint {path} ({type(error).__name__}: {error}); "
                         f"{hint}") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an impure training checkpoint (format {CHECKPOINT_FORMAT}); {hint}")
    return state


def purifier_from_checkpoint(path: str | os.PathLike, ema: bool = True):
    """The purifier a training checkpoint holds, in eval mode: its EMA weights when the run kept an EMA
    (and `ema`), else its current weights."""
    state = load_checkpoint(path)
    purifier = Purifier(PurifierConfig.from_dict(state["purifier_config"]))
    load_state_dict_strict(purifier, state["ema"] if ema and "ema" in state else state["model"], str(path))
    return purifier.eval()


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config dicts."""
    names = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += config_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            names.append(f"{prefix}{key}")
    return names
