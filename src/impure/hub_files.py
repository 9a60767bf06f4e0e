"""Where weights live, the Hugging Face way: local folders, the names bundled inside the package, and Hub ids
(through the Hub's offline cache); and atomic safetensors writes. Base layer: no model here, so that
`impure.classifiers` and `import impure` stay light; `impure.hub` builds the `Purifier`'s Hub methods on it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ._util.atomic import atomic_path

__all__ = ["BUNDLED_PREFIX", "BUNDLED_ROOT", "CONFIG_NAME", "WEIGHTS_NAME", "bundled_names", "resolve_local",
           "resolve_pretrained", "save_file_atomic"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BUNDLED_PREFIX = "impure/"
BUNDLED_ROOT = Path(__file__).parent / "weights"


def bundled_names() -> list[str]:
    """Names of the weights shipped inside the package, e.g. "impure/cifar10-s"."""
    if not BUNDLED_ROOT.is_dir():
        return []
    return sorted(BUNDLED_PREFIX + d.name for d in BUNDLED_ROOT.iterdir() if (d / CONFIG_NAME).is_file())


def resolve_local(name_or_path: str | os.PathLike) -> str:
    """A name as the Hub mixin should see it: a bundled name becomes its folder inside the package; a
    folder or a Hub id ("org/name") is kept.

    Raises:
        FileNotFoundError: at once, without a Hub lookup, for a bundled name that is not shipped, or a
            name that can only be a path (it starts with ".", "/" or "~", or has no "org/" part).
    """
    name = str(name_or_path)
    if Path(name).is_dir():
        return name
    if name.startswith(BUNDLED_PREFIX):  # the bundled namespace never falls through to the Hub
        folder = BUNDLED_ROOT / name[len(BUNDLED_PREFIX):]
        if (folder / CONFIG_NAME).is_file():
            return str(folder)
        raise FileNotFoundError(
            f"no bundled weights named {name!r}; bundled: {', '.join(bundled_names()) or 'none yet'}. "
            "Pass a folder written by save_pretrained or a Hugging Face Hub id instead."
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"no such folder: {name}")
    if "/" not in name:
        raise FileNotFoundError(
            f"{name!r} is not a folder, and not a bundled name (bundled: {', '.join(bundled_names()) or 'none'}); "
            "a Hugging Face Hub id has the form 'org/name'"
        )
    return name


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path]:
    """Find `config.json` and `model.safetensors` for a local folder, a bundled name or a Hub id.

    The Hub is read through the normal Hugging Face cache, so `HF_HUB_OFFLINE=1` works from a
    populated cache.

    Raises:
        FileNotFoundError: none of the three provides the files; the message names the id.
    """
    name = resolve_local(name_or_path)
    if Path(name).is_dir():
        bundled = str(name_or_path).startswith(BUNDLED_PREFIX) and not Path(str(name_or_path)).is_dir()
        return _files_in(Path(name), f"bundled weights {name_or_path}" if bundled else f"folder {name}")

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    try:
        paths = [
            Path(hf_hub_download(name, filename, revision=revision, cache_dir=cache_dir,
                                 force_download=force_download, local_files_only=local_files_only, token=token))
            for filename in (CONFIG_NAME, WEIGHTS_NAME)
        ]
    except HFValidationError as error:
        raise FileNotFoundError(f"{name!r} is not a local folder, a bundled name or a valid Hub id: {error}") from error
    except Exception as error:  # offline, not cached, no such repository, no safetensors file
        bundled = ", ".join(bundled_names()) or "none"
        raise FileNotFoundError(
            f"could not load weights {name!r}: it is not a local folder, not a bundled name (bundled: {bundled}), "
            f"and the Hugging Face Hub did not provide {CONFIG_NAME} and {WEIGHTS_NAME} "
            f"({type(error).__name__}: {error}). Offline, populate the cache first or pass a local folder; "
            "only safetensors weights are read."
        ) from error
    return paths[0], paths[1]


def _files_in(folder: Path, what: str) -> tuple[Path, Path]:
    config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config, weights):
        if not path.is_file():
            extra = " (pickled .bin/.pt weights are not read; convert them to safetensors)" if path == weights else ""
            raise FileNotFoundError(f"{what} has no {path.name}{extra}")
    return config, weights


def save_file_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file through a temporary file and a rename, so no half-written file remains."""
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)
