"""Classifiers by name: `resolve_classifier` turns a name, a file or a module into an `nn.Module` that maps
images in [0, 1] to logits (the lookup that training, the evaluation and the demo share)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._util.state import load_state_dict_strict
from .._util.versions import import_torchvision
from .registry import list_classifiers, load_classifier

__all__ = ["Normalized", "resolve_classifier"]

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")
_CLASSIFIER_FORMS = (
    "a name from impure.classifiers (e.g. 'cifar_resnet56' with weights=..., on the command line "
    "--classifier cifar_resnet56 --classifier-weights FILE) or its .safetensors file, "
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
    if weights is not None and not Path(weights).expanduser().is_file():
        raise FileNotFoundError(f"no such file: {weights} (the weights of classifier {spec!r})")
    if path.is_file() and path.suffix.lower() in _TORCHSCRIPT_SUFFIXES:
        return _load_torchscript(path), path.name
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.split(":", 1)[1], weights), spec
    if spec.startswith("timm:"):
        return _timm_model(spec.split(":", 1)[1], weights), spec
    if ":" in spec and not path.exists():
        return _call_factory(spec), spec
    names = list_classifiers()
    if path.is_file() and path.suffix == ".safetensors" and weights is None:
        # A shared checkpoint named after its architecture, e.g. cifar10_resnet56.safetensors.
        matches = [name for name in names if name.removeprefix("cifar_") in path.stem]
        if len(matches) != 1:
            raise ValueError(
                f"cannot tell the architecture of {path.name} from its name; pass the architecture "
                f"({', '.join(names)}) as the classifier and this file as its weights"
            )
        return load_classifier(matches[0], path), matches[0]
    if spec in names:
        if weights is None and not spec.startswith("impure/"):  # bundled classifiers carry their weights
            raise ValueError(
                f"classifier {spec!r} needs its trained weights: pass weights=PATH (--classifier-weights) "
                "with its .safetensors file; a randomly initialised classifier measures nothing"
            )
        return load_classifier(spec, weights), spec
    if not path.exists() and (path.suffix.lower() in (*_TORCHSCRIPT_SUFFIXES, ".safetensors") or os.sep in spec):
        raise FileNotFoundError(f"no such file: {spec} (the classifier)")
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
        raise ValueError(f"{spec}() must return an nn.Module, got {type(model).__name__}")
    return model


def _download_error(name: str, error: Exception) -> OSError:
    return OSError(
        f"could not get the pretrained weights of {name} ({error}); without network, pass a local state dict "
        "with weights=... (--classifier-weights)"
    )


def _torchvision_model(name: str, weights: str | os.PathLike | None) -> nn.Module:
    torchvision = import_torchvision()

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
