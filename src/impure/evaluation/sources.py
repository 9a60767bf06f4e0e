"""What an evaluation runs on: data, classifiers and defences, given as objects, names or paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from impure._util.checks import check_images, check_integer, check_labels
from impure._util.versions import import_torchvision
from impure.classifiers.lookup import Normalized, resolve_classifier
from impure.defences import is_baseline_name, load_defence
from impure.model import PurifierModel

__all__ = ["TORCHVISION_DATASETS", "Normalized", "describe", "load_data", "noise_timesteps", "resolve_classifier",
           "resolve_purifier"]

# torchvision datasets `load_data` accepts by name: the class and its evaluation split arguments.
TORCHVISION_DATASETS = {
    "cifar10": ("CIFAR10", {"train": False}),
    "cifar100": ("CIFAR100", {"train": False}),
    "svhn": ("SVHN", {"split": "test"}),
    "stl10": ("STL10", {"split": "test"}),
}
_DATA_ROOT = "~/.cache/impure/datasets"



# --------------------------------------------------------------------------------------------------
# data
def load_data(
    data: Any,
    *,
    limit: int | None = None,
    image_size: int | None = None,
    data_root: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Load labelled evaluation images into memory.

    Args:
        data: an (images, labels) pair of tensors, an `.npz` file with `images`/`labels`, an image folder
            with one subfolder per class (sorted names give the class indices), or a torchvision dataset
            name ("cifar10", "cifar100", "svhn", "stl10": its test split, downloaded on first use).
        limit: keep only the first `limit` images.
        image_size: resize image-folder images to this side (needed when their sizes differ).
        data_root: where torchvision datasets are stored (default ~/.cache/impure/datasets).

    Returns:
        images float (N, 3, H, W) in [0, 1], labels int64 (N,), and a short description of the source.
    """
    if limit is not None:
        check_integer("limit", limit)
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
        description = "tensors"
    elif isinstance(data, str | os.PathLike):
        images, labels, description = _load_data_source(data, limit, image_size, data_root)
    else:
        raise TypeError(
            "data must be an (images, labels) pair of tensors, a path or a dataset name, "
            f"got {type(data).__name__}"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if isinstance(labels, torch.Tensor) and labels.numel() and int(labels.min()) == -1:
        raise ValueError(
            f"{description} has unlabelled images (label -1); put the images in one subfolder per class "
            "or use an .npz with a labels array"
        )
    check_images(images)
    check_labels(labels, images.shape[0])
    return images.float(), labels.long(), description


def _load_data_source(
    data: str | os.PathLike, limit: int | None, image_size: int | None, data_root: str | os.PathLike | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    from impure.data import fetch_batch, open_dataset

    path = Path(data).expanduser()
    if not path.exists() and str(data).lower() in TORCHVISION_DATASETS:
        return _load_torchvision(str(data).lower(), data_root)
    if not path.exists():
        raise FileNotFoundError(
            f"no such data file or folder: {path}; give an .npz with images/labels, an image folder with one "
            f"subfolder per class, or a torchvision dataset name ({', '.join(TORCHVISION_DATASETS)})"
        )
    dataset = open_dataset(path, image_size=image_size)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    batch = fetch_batch(dataset, torch.arange(count))
    if len(batch) != 2:
        raise ValueError(
            f"{path} holds adversarial triples, not clean labelled images; evaluate the clean data"
        )
    return batch[0], batch[1], path.name


def _load_torchvision(
    name: str, data_root: str | os.PathLike | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    torchvision = import_torchvision()

    class_name, split = TORCHVISION_DATASETS[name]
    factory = getattr(torchvision.datasets, class_name)
    root = Path(data_root or _DATA_ROOT).expanduser()
    try:
        dataset = factory(str(root), download=False, **split)
    except RuntimeError:  # not downloaded yet
        try:
            dataset = factory(str(root), download=True, **split)
        except Exception as error:  # urllib, socket and checksum errors differ across versions
            raise OSError(
                f"could not download the torchvision dataset {name!r} into {root} ({error}); without "
                "network, copy the dataset there (or pass data_root / --data-root), or evaluate an .npz "
                "or an image folder"
            ) from error
    pixels = torch.as_tensor(dataset.data)
    if pixels.shape[-1] == 3:  # (N, H, W, 3) -> (N, 3, H, W)
        pixels = pixels.permute(0, 3, 1, 2)
    labels = torch.as_tensor(getattr(dataset, "targets", None) or getattr(dataset, "labels", None))
    return pixels.float() / 255, labels.long(), f"{name} (test split)"


# --------------------------------------------------------------------------------------------------
# classifiers
def resolve_purifier(purifier: Any, dtype: torch.dtype | None = None, *, strength: float | None = None,
                     noise_t: tuple[int, int] | None = None) -> tuple[nn.Module | None, str]:
    """Turn a defence argument into an `nn.Module` (or None for no defence) and a description.

    Args:
        purifier: None or "none"; an `nn.Module`; a baseline name ("jpeg75", "bits4", "median3"); or a
            name or folder for `Purifier.from_pretrained` (e.g. "impure/cifar10-s"): see
            `impure.defences.load_defence`, which loads it.
        dtype: the dtype of a purifier loaded by name (default: as saved).
        strength: its strength (`Purifier.set_strength`), or
        noise_t: its (image, feature) noise timesteps (`Purifier.set_noise_t`).
    """
    defence = load_defence(purifier, dtype=dtype, strength=strength, noise_t=noise_t)
    if defence is None:
        return None, "none"
    if isinstance(purifier, nn.Module):
        return defence, describe(defence)
    return defence, str(purifier).lower() if is_baseline_name(str(purifier)) else str(purifier)


def noise_timesteps(defence: nn.Module | None) -> list[int] | None:
    """The image and feature noise timesteps an IMPure purifier in noise mode runs at (its strength, after
    `set_strength`), else None: what a report records so that its rows can be compared across purifiers."""
    if not isinstance(defence, PurifierModel) or defence.config.mask_mode != "noise":
        return None
    return [defence.config.image_noise_t, defence.config.feature_noise_t]


def describe(module: nn.Module) -> str:
    """A short name of a defence module for reports, e.g. "JPEG(quality=75)"."""
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__
