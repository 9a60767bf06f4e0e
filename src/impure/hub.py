"""Hub I/O: `Purifier`, the purifier with its Hugging Face Hub methods. It loads weights from a local folder,
a bundled name or a Hub id (strictly, from safetensors), saves and shares them with their config and model
card, and converts checkpoints of the paper's reference implementation. The network itself is
`impure.model.PurifierModel`; where weights live is `impure.hub_files`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin

from ._util.state import load_state_dict_strict, read_state_dict
from .cards import model_card
from .config import PurifierConfig
from .device import select_device
from .hub_files import (
    BUNDLED_PREFIX,
    BUNDLED_ROOT,
    CONFIG_NAME,
    WEIGHTS_NAME,
    bundled_names,
    resolve_local,
    resolve_pretrained,
    save_file_atomic,
)
from .model.purifier import PurifierModel
from .model.reference import convert_reference_state_dict, load_reference_state_dict, reference_config

__all__ = ["BUNDLED_PREFIX", "BUNDLED_ROOT", "CONFIG_NAME", "WEIGHTS_NAME", "Purifier", "bundled_names",
           "resolve_local", "resolve_pretrained", "save_file_atomic"]

_HUB_ARGUMENTS = ("revision", "cache_dir", "force_download", "local_files_only", "token")


class Purifier(
    PurifierModel,
    PyTorchModelHubMixin,
    library_name="impure",
    tags=["adversarial-purification", "impure"],
):
    """Purify images: `purifier(x)` maps (N, 3, H, W) images in [0, 1] to purified images in [0, 1].

    The network of `impure.model.PurifierModel`, with `from_pretrained`, `save_pretrained`, `push_to_hub`
    and `from_reference`.

    Args:
        config: the architecture; `PurifierConfig()` (the paper's ViT-B/16) if omitted.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Purifier:
        """Load a purifier from a local folder, a bundled name ("impure/cifar10-s") or a Hub id ("org/name").

        The Hugging Face mixin's loader, with its arguments (`revision`, `cache_dir`, `force_download`,
        `local_files_only`, `token`). Only `model.safetensors` is read, strictly: a missing, unexpected or
        mis-shaped tensor, or an unknown config field, is an error that names it. Bundled names and local
        paths never reach the Hub (the mixin would look them up there first).

        Args:
            pretrained_model_name_or_path: folder, bundled name or Hub id.
            **kwargs: the options below, the mixin's download arguments, and config fields to change that
                do not affect the weights' shapes, e.g. `image_noise_t=300` or `partition="random"`.

        Other Parameters:
            device (str | torch.device): where to put the model ("auto", "cuda", "cpu", ...); the CPU if
                omitted.
            dtype (torch.dtype): e.g. `torch.bfloat16` for half-precision inference.
        """
        source = resolve_local(pretrained_model_name_or_path)
        if not Path(source).is_dir():
            # A Hub id: fetch it (or find it in the cache) here, with an error that names the id, then let
            # the mixin read the cached files.
            hub = {k: kwargs.pop(k) for k in _HUB_ARGUMENTS if k in kwargs}
            resolve_pretrained(source, **hub)
            kwargs.update(revision=hub.get("revision"), cache_dir=hub.get("cache_dir"), token=hub.get("token"),
                          local_files_only=True)
        return super().from_pretrained(source, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | os.PathLike | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         config: Any = None, device: str | torch.device | None = None,
                         dtype: torch.dtype | None = None, **config_overrides: Any) -> Purifier:
        """The mixin's hook: read config.json and model.safetensors (from the folder, or the Hub and its
        cache), build the purifier strictly, in eval mode, on `device` in `dtype`."""
        config_path, weights_path = resolve_pretrained(
            model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )
        purifier_config = PurifierConfig.from_json(str(config_path))  # strict: unknown fields are errors
        if config_overrides:
            purifier_config = purifier_config.replace(**config_overrides)
        model = cls(purifier_config)
        state = read_state_dict(weights_path)
        model.check_backbone_of(state, model_id)
        load_state_dict_strict(model, state, model_id)
        model.eval()
        return model.to(device=select_device(device) if device is not None else None, dtype=dtype)

    @classmethod
    def from_reference(cls, path: str | os.PathLike, **overrides: Any) -> Purifier:
        """Build an equivalent purifier from a checkpoint of the paper's reference implementation.

        Args:
            path: a `.safetensors` state dict, or a `torch.save` file holding one (or a dict with a
                "model" entry), read with `weights_only=True`.
            overrides: config fields to set beyond what the tensor shapes tell, e.g. `mask_mode="token"`,
                `encoder_heads=` / `decoder_heads=` where no preset matches the widths.
        """
        state = load_reference_state_dict(path)
        config = reference_config(state, **overrides)
        model = cls(config)
        load_state_dict_strict(model, convert_reference_state_dict(state, config), str(path))
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike, *, evaluation: Any = None,
                        training: str | dict[str, Any] | None = None, name: str | None = None,
                        model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> str | None:
        """Write `config.json`, `model.safetensors` and a model card (`README.md`) into `save_directory`.

        The mixin's method (`push_to_hub=True, repo_id="org/name"` also uploads the folder; see
        `push_to_hub`). The card (`impure.cards.model_card`) has the Hub metadata, the architecture, how to
        load and wrap the purifier and, when given, the training recipe and the measured table. A card
        already in the folder is kept unless `evaluation`, `training` or `name` is given: then it is rewritten.

        Args:
            save_directory: the folder (created if missing).
            evaluation: an `EvaluationResult` (or several) of this purifier, for the card's table and its
                `model-index` metrics.
            training: the training recipe: Markdown text or a Trainer config dict (`TrainConfig.to_dict()`).
            name: the name users load it by (default: `repo_id` when pushing, else a placeholder).
            model_card_kwargs: more arguments of the card (`impure.cards.model_card`).
            **kwargs: the mixin's (`config`, `push_to_hub`, `repo_id`, ...).
        """
        card = {**(model_card_kwargs or {}), **{key: value for key, value in
                                                 (("evaluation", evaluation), ("training", training), ("name", name))
                                                 if value is not None}}  # fmt: skip
        readme = Path(save_directory) / "README.md"
        if card and readme.is_file():
            readme.unlink()  # asked for a new card: the mixin writes cards only where there is none
        return super().save_pretrained(save_directory, model_card_kwargs=card, **kwargs)

    def push_to_hub(self, repo_id: str, *, evaluation: Any = None, training: str | dict[str, Any] | None = None,
                    model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Upload config, weights and model card to the Hub repository `repo_id` ("org/name"), creating it.

        The mixin's method (`token`, `private`, `branch`, `create_pr`, `commit_message`, ...); the card is
        written as by `save_pretrained`, named `repo_id`, with `evaluation` and `training` if given. Log in
        first (`hf auth login`, or pass `token`).
        """
        card = {"name": repo_id, **(model_card_kwargs or {}),
                **{key: value for key, value in (("evaluation", evaluation), ("training", training))
                   if value is not None}}  # fmt: skip
        return super().push_to_hub(repo_id, model_card_kwargs=card, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """The model card `save_pretrained` writes: `impure.cards.model_card` for this purifier's config."""
        return model_card(self.config, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write `model.safetensors` atomically (the mixin writes `config.json` beside it)."""
        state = {key: tensor.detach().contiguous().cpu() for key, tensor in self.state_dict().items()}
        save_file_atomic(state, Path(save_directory) / WEIGHTS_NAME, metadata={"format": "pt"})

    def _set_config(self, config: PurifierConfig) -> None:
        """The config the model runs with, and the one `save_pretrained` writes as config.json."""
        super()._set_config(config)
        self._hub_mixin_config = config
