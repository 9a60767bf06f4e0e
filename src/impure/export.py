"""Export a purifier, alone or with its classifier, for deployment: an ONNX file (ONNX Runtime, TensorRT, ...) or a
`torch.export` program (`.pt2`, for `torch.export.load` and AOTInductor).

A noise-mode purifier draws standard-normal noise on every call. Both formats take it as explicit inputs,
`image_noise` and `feature_noise` (shapes from `Purifier.noise_shapes`, also written into the JSON beside the file),
so that the server owns the random draws and a purification can be replayed exactly; a token-mode purifier has no
noise inputs. The batch size is free; the image size is fixed at export (`image_size`). The exported graph does not
check its input: give it float32 RGB images in [0, 1].
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ._util.atomic import atomic_path, atomic_write
from ._util.checks import inputs_validated
from .classifier import PurifiedClassifier

__all__ = ["ExportError", "export", "export_onnx", "export_program", "exported_inputs"]

FORMATS = ("onnx", "program")
_MAX_BATCH = 4096


class ExportError(ValueError):
    """A model that cannot be exported, with the part that failed and why."""


class _Deployed(nn.Module):
    """What is exported: images (and the noise) -> purified images, or the classifier's logits on them."""

    def __init__(self, purifier: nn.Module, classifier: nn.Module | None) -> None:
        super().__init__()
        self.purifier = purifier
        self.classifier = classifier

    def forward(self, images: torch.Tensor, image_noise: torch.Tensor | None = None,
                feature_noise: torch.Tensor | None = None) -> torch.Tensor:
        with inputs_validated():  # value checks cannot be part of a graph
            if image_noise is None:
                purified = self.purifier(images)
            else:
                purified = self.purifier(images, image_noise=image_noise, feature_noise=feature_noise)
        return purified if self.classifier is None else self.classifier(purified)


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(purifier, classifier or None) of a `PurifiedClassifier` or a purifier."""
    from .model import PurifierModel

    if isinstance(model, PurifiedClassifier):
        purifier, classifier = model.purifier, model.classifier
    else:
        purifier, classifier = model, None
    if not isinstance(purifier, PurifierModel):
        raise ExportError(f"export takes a Purifier or a PurifiedClassifier around one, got {type(purifier).__name__} "
                          "as the purifier (the baselines have no export path)")
    return purifier, classifier


def exported_inputs(model: nn.Module, batch_size: int = 1, image_size: int | tuple[int, int] | None = None,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Example inputs of the exported graph, by name: `images` in [0, 1] and, in noise mode, standard-normal
    `image_noise` and `feature_noise`, on the model's device. `image_size` defaults to the purifier's."""
    purifier, _ = _split(model)
    height, width = _size(purifier, image_size)
    generator = torch.Generator().manual_seed(seed)
    inputs = {"images": torch.rand(batch_size, 3, height, width, generator=generator)}
    for name, shape in purifier.noise_shapes(batch_size, height, width).items():
        inputs[name] = torch.randn(shape, generator=generator)
    return {name: tensor.to(purifier.device) for name, tensor in inputs.items()}


def _size(purifier: nn.Module, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if image_size is None:
        return purifier.config.image_size, purifier.config.image_size
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    largest = purifier.config.max_input_size
    if not (isinstance(height, int) and isinstance(width, int)) or min(height, width) < 1:
        raise ExportError(f"image_size must be a positive side or (height, width), got {image_size!r}")
    if max(height, width) > largest:
        raise ExportError(f"image_size {height}x{width} exceeds the largest size this purifier takes, {largest} px "
                          "per side; export at a size it supports and tile larger images "
                          "(impure.defences.purify_tiled)")
    return height, width


def _trace(model: nn.Module, batch_size: int, image_size: int | tuple[int, int] | None,
           dynamic_batch: bool) -> tuple[torch.export.ExportedProgram, _Deployed, dict[str, torch.Tensor]]:
    purifier, classifier = _split(model)
    deployed = _Deployed(purifier, classifier).eval()
    # A traced batch of 1 would be specialised (PyTorch treats sizes 0 and 1 apart): trace a free batch with 2.
    inputs = exported_inputs(model, max(batch_size, 2) if dynamic_batch else batch_size, image_size)
    with torch.no_grad():
        deployed(*inputs.values())  # builds the purifier's cached layout, which the graph then holds as constants
    dims = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
        dims = {name: {0: batch} for name in inputs}
    try:
        program = torch.export.export(deployed, tuple(inputs.values()), dynamic_shapes=dims)
    except Exception as error:  # torch.export raises many kinds; name the part that failed
        part = "the purifier"
        if classifier is not None:
            try:
                torch.export.export(_Deployed(purifier, None).eval(), tuple(inputs.values()), dynamic_shapes=dims)
                part = f"the classifier ({type(classifier).__name__})"
            except Exception:  # noqa: BLE001 - the purifier fails too: report it
                pass
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{part} cannot be traced by torch.export ({type(error).__name__}: {first}); a traceable "
                          "model has no Python control flow on tensor values and no calls outside PyTorch") from error
    return program, deployed, inputs


def _write_manifest(path: Path, fmt: str, model: nn.Module, inputs: dict[str, torch.Tensor], output: str,
                    dynamic_batch: bool) -> None:
    purifier, classifier = _split(model)
    manifest = {
        "format": fmt, "file": path.name,
        "inputs": {name: ["batch" if dynamic_batch else t.shape[0], *t.shape[1:]] for name, t in inputs.items()},
        "output": output,
        "images": "float32 RGB in [0, 1], (batch, 3, height, width)",
        "noise": "standard normal, drawn by the caller for every call" if len(inputs) > 1 else None,
        "noise_t": list(purifier.noise_t) if purifier.config.mask_mode == "noise" else None,
        "purifier_config": purifier.config.to_dict(),
        "classifier": None if classifier is None else type(classifier).__name__,
    }  # fmt: skip
    atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps(manifest, indent=2) + "\n")


def export_program(model: nn.Module, path: str | os.PathLike, *, batch_size: int = 1,
                   image_size: int | tuple[int, int] | None = None, dynamic_batch: bool = True) -> Path:
    """Write `model` (a `Purifier`, or a `PurifiedClassifier` around one) as a `torch.export` program (`.pt2`),
    plus `<file>.json` describing its inputs.

    Load it with `torch.export.load(path).module()` and call it as `module(images, image_noise, feature_noise)`
    (noise mode) or `module(images)`.

    Args:
        model: what to export, in eval mode (the purifier purifies at its current noise timesteps).
        path: the `.pt2` file to write (atomically).
        batch_size: the example batch it is traced with (with `dynamic_batch`, any batch size runs).
        image_size: the side (or height, width) of the images it takes; default the purifier's `image_size`.
        dynamic_batch: leave the batch size free (default) or fix it at `batch_size`.

    Raises:
        ExportError: the model (the purifier or the classifier, named) cannot be traced, or the size is refused.
    """
    path = Path(path)
    program, _, inputs = _trace(model, batch_size, image_size, dynamic_batch)
    with atomic_path(path) as partial:
        torch.export.save(program, partial)
    _write_manifest(path, "torch.export", model, inputs, _output_name(model), dynamic_batch)
    return path


def export_onnx(model: nn.Module, path: str | os.PathLike, *, batch_size: int = 1,
                image_size: int | tuple[int, int] | None = None, dynamic_batch: bool = True,
                opset: int = 18) -> Path:
    """Write `model` (a `Purifier`, or a `PurifiedClassifier` around one) as an ONNX file, plus `<file>.json`
    describing its inputs; needs `pip install "impure[export]"` (onnx and onnxscript).

    Its inputs are named `images` and, in noise mode, `image_noise` and `feature_noise`; its output `purified`
    or `logits`. Arguments as `export_program`, and `opset`, the ONNX opset version.

    Raises:
        ExportError: the model cannot be traced or converted (the part is named), or the size is refused.
        ImportError: onnx or onnxscript is missing.
    """
    path = Path(path)
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as error:
            raise ImportError(f"ONNX export needs {package}: `pip install \"impure[export]\"`") from error
    program, _, inputs = _trace(model, batch_size, image_size, dynamic_batch)
    output = _output_name(model)
    try:
        onnx_program = torch.onnx.export(program, input_names=list(inputs), output_names=[output], opset_version=opset,
                                         dynamo=True, verbose=False)
    except Exception as error:  # the converter's own errors: an operator without an ONNX translation, say
        raise ExportError(f"the traced model could not be converted to ONNX opset {opset} "
                          f"({type(error).__name__}: {str(error).strip().splitlines()[0]})") from error
    with atomic_path(path) as partial:
        onnx_program.save(str(partial))
    _write_manifest(path, "onnx", model, inputs, output, dynamic_batch)
    return path


def _output_name(model: nn.Module) -> Literal["purified", "logits"]:
    return "logits" if isinstance(model, PurifiedClassifier) else "purified"


def export(model: nn.Module, path: str | os.PathLike, fmt: str, **options: Any) -> Path:
    """`export_onnx` or `export_program` by name ("onnx" or "program")."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return (export_onnx if fmt == "onnx" else export_program)(model, path, **options)
