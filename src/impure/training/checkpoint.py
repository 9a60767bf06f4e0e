"""Atomic training checkpoints: a file is replaced in one step, so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "atomic_write_text", "config_differences", "load_checkpoint"]

CHECKPOINT_FORMAT = 1


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """`torch.save` `state` to `path` through a temporary file in the same folder and `os.replace`."""
    _atomic(Path(path), lambda stream: torch.save({"format": CHECKPOINT_FORMAT, **state}, stream))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    _atomic(Path(path), lambda stream: stream.write(text.encode("utf-8")))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `atomic_save` (tensors and plain values only: `weights_only=True`)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an impure training checkpoint (format {CHECKPOINT_FORMAT})")
    return state


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
