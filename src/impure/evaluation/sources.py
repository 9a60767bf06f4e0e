"""What an evaluation runs on: data, classifiers and defences, given as objects, names or paths."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from impure._state import load_state_dict_strict

__all__ = ["TORCHVISION_DATASETS", "describe", "load_data", "resolve_classifier", "resolve_purifier"]

# torchvision datasets `load_data` accepts by name: the class and its evaluation split arguments.
TORCHVISION_DATASETS = {
    "cifar10": ("CIFAR10", {"train": False}),
    "cifar100": ("CIFAR100", {"train": False}),
    "svhn": ("SVHN", {"split": "test"}),
    "stl10": ("STL10", {"split": "test"}),
}
_DATA_ROOT = "~/.cache/impure/datasets"
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")
_CLASSIFIER_FORMS = (
    "a name from impure.classifiers (e.g. 'cifar_resnet56' with weights=...) or its .safetensors file, "
    "'torchvision:<model>', "
    "'timm:<model>', a Python 'module:callable' returning an nn.Module, or a TorchScript file (.pt)"
)


class Normalized(nn.Module):
    """A classifier that expects normalised inputs, behind the [0, 1] convention: (x - mean) / std first."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


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
    from impure._checks import check_images, check_labels

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images, got {limit!r}")
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
    import torchvision.datasets

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
def resolve_classifier(classifier: Any, weights: str | os.PathLike | None = None) -> tuple[nn.Module, str]:
    """Turn a classifier argument into an `nn.Module` (images in [0, 1] -> logits) and a description.

    Args:
        classifier: an `nn.Module`; a model name from `impure.classifiers` ("cifar_resnet20",
            "cifar_resnet56", "squeezenet1_0_caffe") with `weights`, or a `.safetensors` file named after
            one (e.g. "cifar10_resnet56.safetensors"); "torchvision:<name>" or "timm:<name>" (ImageNet
            weights are downloaded unless `weights` gives a local state dict; inputs are normalised
            with the model's statistics); a Python "module:callable" returning an `nn.Module`; or a
            TorchScript file (.pt, .pth, .ts).
        weights: a local weights file for a named architecture.
    """
    if isinstance(classifier, nn.Module):
        return classifier, type(classifier).__name__
    if not isinstance(classifier, str | os.PathLike):
        raise TypeError(f"classifier must be an nn.Module or a str, got {type(classifier).__name__}")
    spec = str(classifier)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in _TORCHSCRIPT_SUFFIXES:
        return _load_torchscript(path), path.name
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.split(":", 1)[1], weights), spec
    if spec.startswith("timm:"):
        return _timm_model(spec.split(":", 1)[1], weights), spec
    if ":" in spec and not path.exists():
        return _call_factory(spec), spec
    from impure import classifiers

    names = classifiers.list_classifiers()
    if path.is_file() and path.suffix == ".safetensors" and weights is None:
        # A shared checkpoint named after its architecture, e.g. cifar10_resnet56.safetensors.
        matches = [name for name in names if name.removeprefix("cifar_") in path.stem]
        if len(matches) != 1:
            raise ValueError(
                f"cannot tell the architecture of {path.name} from its name; pass the architecture "
                f"({', '.join(names)}) as the classifier and this file as its weights"
            )
        return classifiers.load_classifier(matches[0], path), matches[0]
    if spec in names:
        if weights is None and not spec.startswith("impure/"):  # bundled classifiers carry their weights
            raise ValueError(
                f"classifier {spec!r} needs its trained weights: pass weights=PATH (--classifier-weights) "
                "with its .safetensors file; a randomly initialised classifier measures nothing"
            )
        return classifiers.load_classifier(spec, weights), spec
    raise ValueError(f"unknown classifier {spec!r}; give {_CLASSIFIER_FORMS}")


def _load_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise ValueError(
            f"{path} is not a TorchScript file ({error}); save one with torch.jit.script(model).save(path), "
            "or pass a 'module:callable' that builds the model"
        ) from error


def _call_factory(spec: str) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} of classifier {spec!r}: {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attribute!r} (classifier {spec!r})")
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec}() must return an nn.Module, got {type(model).__name__}")
    return model


def _download_error(name: str, error: Exception) -> OSError:
    return OSError(
        f"could not get the pretrained weights of {name} ({error}); without network, pass a local state dict "
        "with weights=... (--classifier-weights)"
    )


def _torchvision_model(name: str, weights: str | os.PathLike | None) -> nn.Module:
    import torchvision.models

    if name not in torchvision.models.list_models():
        raise ValueError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    default = torchvision.models.get_model_weights(name).DEFAULT
    if weights is None:
        try:
            model = torchvision.models.get_model(name, weights=default)
        except Exception as error:  # network errors
            raise _download_error(f"torchvision:{name}", error) from error
    else:
        model = torchvision.models.get_model(name, weights=None)
        load_state_dict_strict(model, weights)
    transform = default.transforms()
    return Normalized(model, tuple(transform.mean), tuple(transform.std)).eval()


def _timm_model(name: str, weights: str | os.PathLike | None) -> nn.Module:
    import timm

    if not timm.list_models(name, pretrained=False):
        raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
    try:
        model = timm.create_model(name, pretrained=weights is None)
    except Exception as error:  # network errors
        raise _download_error(f"timm:{name}", error) from error
    if weights is not None:
        load_state_dict_strict(model, weights)
    config = model.pretrained_cfg
    return Normalized(model, tuple(config["mean"]), tuple(config["std"])).eval()


# --------------------------------------------------------------------------------------------------
# defences
def resolve_purifier(purifier: Any, dtype: torch.dtype | None = None) -> tuple[nn.Module | None, str]:
    """Turn a defence argument into an `nn.Module` (or None for no defence) and a description.

    Args:
        purifier: None or "none"; an `nn.Module`; a baseline name ("jpeg75", "bits4", "median3"); or a
            name or folder for `Purifier.from_pretrained` (e.g. "impure/cifar10-s").
        dtype: the dtype of a purifier loaded by name (default: as saved).
    """
    if purifier is None or (isinstance(purifier, str) and purifier.lower() in ("none", "")):
        return None, "none"
    if isinstance(purifier, nn.Module):
        return purifier, describe(purifier)
    if not isinstance(purifier, str | os.PathLike):
        raise TypeError(f"purifier must be None, an nn.Module, or a name/path, got {type(purifier).__name__}")
    from impure.baselines import is_baseline_name, load_baseline

    spec = str(purifier)
    if is_baseline_name(spec):
        return load_baseline(spec), spec.lower()
    from impure import Purifier

    return Purifier.from_pretrained(spec, dtype=dtype).eval(), spec


def describe(module: nn.Module) -> str:
    """A short name of a defence module for reports, e.g. "JPEG(quality=75)"."""
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__
