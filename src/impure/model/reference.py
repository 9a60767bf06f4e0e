"""Load checkpoints of the IMPure reference implementation: key mapping and config inference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .._util.state import read_state_dict
from ..config import PurifierConfig, list_presets
from .masking import linear_noise_schedule

__all__ = ["load_reference_state_dict", "reference_config", "convert_reference_state_dict"]

# Reference key prefix -> our key prefix (first match wins; the rest of the key is kept).
_PREFIXES = (
    ("patch_embed.proj.", "patch_embed."),
    ("blocks.", "encoder_blocks."),
    ("proj_layers.", "fusion_proj."),
    ("norm.", "encoder_norm."),
    ("decoder_head_embed.", "decoder_cls_embed."),
    ("decoder_rb1.", "output_conv."),
    ("decoder_embed_norm.", "decoder_embed_norm."),
    ("decoder_embed.", "decoder_embed."),
    ("decoder_blocks.", "decoder_blocks."),
    ("decoder_norm.", "decoder_norm."),
    ("decoder_pred.", "decoder_pred."),
)
_SAME = ("cls_token", "mask_token")
# Tables the reference stores but that depend only on the config: checked, then dropped.
_DERIVED = ("pos_embed", "decoder_pos_embed", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")


def load_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a reference checkpoint: a `.safetensors` state dict, or a `torch.save` dict (weights only)
    holding the state dict itself or under a "model" entry."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    return read_state_dict(path)


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def reference_config(state: dict[str, torch.Tensor], **overrides: Any) -> PurifierConfig:
    """Infer a `PurifierConfig` from the tensor shapes of a reference state dict.

    Attention head counts are not visible in the shapes: they come from a preset with the same widths
    and depths, or must be given as `encoder_heads=` / `decoder_heads=` overrides.
    """
    if overrides.get("backbone", "vit") != "vit":
        raise ValueError(f"the reference implementation is a ViT: its checkpoints load into backbone='vit' only, "
                         f"not backbone={overrides['backbone']!r}")
    required = ("patch_embed.proj.weight", "pos_embed", "decoder_embed.weight", "decoder_head_embed.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"not a reference IMPure checkpoint: missing {missing}")
    width, _, patch, _ = state["patch_embed.proj.weight"].shape
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    inferred: dict[str, Any] = dict(
        patch_size=patch,
        image_size=grid * patch // 2,
        encoder_width=width,
        encoder_depth=_count(state, r"blocks\.(\d+)\."),
        decoder_width=state["decoder_embed.weight"].shape[0],
        decoder_depth=_count(state, r"decoder_blocks\.(\d+)\."),
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width,
        num_groups=state["decoder_head_embed.weight"].shape[1] // width + 1,
        # The reference taps every other block; only the number of taps shows in the shapes.
        fusion_taps=tuple(range(0, 2 * _count(state, r"proj_layers\.(\d+)\."), 2)),
        output_conv="decoder_rb1.weight" in state,
        mask_mode="noise" if "sqrt_alphas_cumprod" in state else "token",
    )
    if "sqrt_alphas_cumprod" in state:
        inferred["noise_steps"] = state["sqrt_alphas_cumprod"].shape[0]
    shape_fields = ("patch_size", "encoder_width", "encoder_depth", "decoder_width", "decoder_depth")
    for name in list_presets():
        preset = PurifierConfig.preset(name)
        if all(getattr(preset, f) == inferred[f] for f in shape_fields):
            inferred.setdefault("encoder_heads", preset.encoder_heads)
            inferred.setdefault("decoder_heads", preset.decoder_heads)
            break
    beyond = sorted(name for name in ("noisy_skip", "pixel_head_width") if overrides.get(name))
    if beyond:
        raise ValueError(f"the reference implementation has no {' or '.join(beyond)}: a reference checkpoint loads "
                         "into the reference design only; add new paths to its weights with recipes/grow_purifier.py")
    inferred.update(overrides)
    if "encoder_heads" not in inferred or "decoder_heads" not in inferred:
        raise ValueError(
            "the number of attention heads cannot be read from a checkpoint's shapes and no preset matches "
            f"widths {inferred['encoder_width']}/{inferred['decoder_width']}; pass encoder_heads= and "
            "decoder_heads= to from_reference"
        )
    return PurifierConfig.from_dict(inferred)


def convert_reference_state_dict(state: dict[str, torch.Tensor], config: PurifierConfig) -> dict[str, torch.Tensor]:
    """Rename a reference state dict to this library's keys, checking the derived tables it drops.

    Raises:
        ValueError: a key that does not belong to the reference model, or a noise schedule that differs
            from the one `config` describes.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if key in _DERIVED:
            continue
        if key == "proj_weights":
            converted["fusion_logits"] = tensor.reshape(-1)
        elif key in _SAME:
            if key == "mask_token" and config.mask_mode != "token":
                continue  # unused when hidden groups are replaced by noise
            converted[key] = tensor
        else:
            for old, new in _PREFIXES:
                if key.startswith(old):
                    converted[new + key[len(old):]] = tensor
                    break
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(f"keys not part of the reference IMPure model: {unknown}")
    if "sqrt_alphas_cumprod" in state:
        signal, scale = linear_noise_schedule(config.noise_steps, config.noise_beta_start, config.noise_beta_end)
        if not (torch.allclose(state["sqrt_alphas_cumprod"].float(), signal, atol=1e-5)
                and torch.allclose(state["sqrt_one_minus_alphas_cumprod"].float(), scale, atol=1e-5)):
            raise ValueError("the checkpoint's noise schedule differs from the config's linear schedule")
    return converted
