"""The IMPure purifier (Liu, Lian, Zhang, Xiao; arXiv 2311.15339): a masked-autoencoder ViT that hides
each of K patch groups in turn and reconstructs all of them in one batched pass, or (`backbone="conv"`) a
blind-spot convolutional network that hides every patch from itself (`impure.model.blindspot`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._util.checks import check_images, should_check_inputs
from .._util.rng import per_sample
from .._util.state import StateDictMismatch
from ..config import PurifierConfig
from .blindspot import BlindSpotNet
from .layers import PixelHead, QueryBlock, sincos_position_table, vit_block
from .masking import lattice_partition, linear_noise_schedule, random_partition, window_rows

__all__ = ["PurifierModel"]

# Fixed multiplier of the noisy-pixel skip path's per-patch map (`PurifierModel.skip`): a learning-rate multiplier
# written into the model. From zero, AdamW at 3e-4 moves a weight by at most 0.08 in 260 steps; the identity
# needs 1.
SKIP_GAIN = 50.0


@dataclass
class PatchLayout:
    """Where every patch goes in one forward pass.

    Tokens are kept in *grouped order*: group g of the K groups occupies positions [g*Q, (g+1)*Q),
    Q = L / K. Index tensors have a leading dimension of 1 (shared by the batch) or B.
    """

    rows: int  # patch rows of the (padded) input
    cols: int  # patch columns
    order: torch.Tensor  # (1|B, L): raster index of the patch at each grouped position
    inverse: torch.Tensor  # (1|B, L): grouped position of each raster patch
    positions: torch.Tensor  # (1|B, L): position-table row of each grouped position
    # The 2x2 lattice of K = 4: grouping and ungrouping are reshapes, with no index tensors involved.
    lattice2x2: bool = False


def _repeat_index(index: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a (B, L) index for a batch of B * r (several passes stacked); keep a shared (1, L) one."""
    return index if index.shape[0] == 1 else index.repeat(batch // index.shape[0], 1)


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens: (B, L, C), index: (1|B, L) -> tokens[b, index[b]] of shape (B, L, C)."""
    if index.shape[0] == 1:
        return tokens.index_select(1, index[0])
    return torch.gather(tokens, 1, index[:, :, None].expand(-1, -1, tokens.shape[-1]))


class PurifierModel(nn.Module):
    """The purifier's network: `model(x)` maps (N, 3, H, W) images in [0, 1] to purified images in [0, 1].

    The architecture alone; `impure.Purifier` (in `impure.hub`) adds loading, saving and sharing weights.

    Args:
        config: the architecture; `PurifierConfig()` (the paper's ViT-B/16) if omitted.
    """

    def __init__(self, config: PurifierConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = PurifierConfig()
        elif isinstance(config, dict):
            config = PurifierConfig.from_dict(config)
        elif not isinstance(config, PurifierConfig):
            raise TypeError(f"config must be a PurifierConfig, got {type(config).__name__}")
        self._set_config(config)
        self._nominal_noise_t = (config.image_noise_t, config.feature_noise_t)  # strength 1
        signal, scale = linear_noise_schedule(config.noise_steps, config.noise_beta_start, config.noise_beta_end)
        # Derived from the config alone, so not saved with the weights.
        self.register_buffer("noise_signal", signal, persistent=False)  # sqrt(alpha_bar_t)
        self.register_buffer("noise_scale", scale, persistent=False)  # sqrt(1 - alpha_bar_t)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        if config.backbone == "conv":
            self.blindspot = BlindSpotNet(config.patch_size, config.conv_width, config.conv_depth,
                                          noisy_copy=config.mask_mode == "noise", eps=config.norm_eps)
            self.output_conv = nn.Conv2d(3, 3, kernel_size=3, padding=1) if config.output_conv else nn.Identity()
            return
        self._build_vit(config)
        self.init_weights()

    def _build_vit(self, config: PurifierConfig) -> None:
        """The paper's masked-autoencoder ViT (`backbone="vit"`): encoder, fusion, decoder and heads."""
        width, dec_width, patch = config.encoder_width, config.decoder_width, config.patch_size
        groups, eps = config.num_groups, config.norm_eps

        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder_blocks = nn.ModuleList(
            vit_block(width, config.encoder_heads, config.mlp_ratio, eps) for _ in range(config.encoder_depth)
        )
        self.fusion_proj = nn.ModuleList(nn.Linear(width, width) for _ in config.fusion_taps)
        self.fusion_logits = nn.Parameter(torch.ones(len(config.fusion_taps) + 1))
        self.encoder_norm = nn.LayerNorm(width, eps=eps)

        self.decoder_embed = nn.Linear(width, dec_width)
        self.decoder_embed_norm = nn.LayerNorm(dec_width, eps=eps)
        self.decoder_cls_embed = nn.Linear((groups - 1) * width, dec_width)
        if config.mask_mode == "token":
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_width))
        # The last decoder block computes only the hidden tokens (see `decode`).
        self.decoder_blocks = nn.ModuleList(
            [vit_block(dec_width, config.decoder_heads, config.mlp_ratio, eps) for _ in range(config.decoder_depth - 1)]
            + [QueryBlock(dec_width, config.decoder_heads, config.mlp_ratio, qkv_bias=True,
                          norm_layer=partial(nn.LayerNorm, eps=eps))]
        )
        self.decoder_norm = nn.LayerNorm(dec_width, eps=eps)
        self.decoder_pred = nn.Linear(dec_width, patch * patch * 3)
        self.output_conv = nn.Conv2d(3, 3, kernel_size=3, padding=1) if config.output_conv else nn.Identity()
        if config.noisy_skip:  # a per-patch linear map of the patch's own noised pixels (see `skip`)
            self.skip_proj = nn.Conv2d(3, 3 * patch * patch, kernel_size=patch, stride=patch)
        if config.pixel_head_width:  # corrects each copy's hidden pixels (see `refine`); closed, as the skip path
            self.pixel_head = PixelHead(config.pixel_head_width)

        grid = config.grid_size
        self.register_buffer("pos_table", sincos_position_table(width, grid), persistent=False)
        self.register_buffer("decoder_pos_table", sincos_position_table(dec_width, grid), persistent=False)
        # For decoder copy c, the groups that stay visible, in ascending order: (K, K-1).
        others = [[g for g in range(groups) if g != c] for c in range(groups)]
        self.register_buffer("other_groups", torch.tensor(others, dtype=torch.long), persistent=False)
        self._layouts: dict[tuple, PatchLayout] = {}  # evaluation layouts by (rows, cols, device)

    def init_weights(self) -> None:
        """The ViT's MAE initialisation: Xavier-uniform linear layers and patch embedding, N(0, 0.02) tokens (the
        conv backbone keeps PyTorch's default initialisation)."""
        if self.config.backbone == "conv":
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        if self.config.mask_mode == "token":
            nn.init.normal_(self.mask_token, std=0.02)
        nn.init.ones_(self.fusion_logits)
        if self.config.noisy_skip:  # closed at first: training opens it, and trained weights keep their output
            nn.init.zeros_(self.skip_proj.weight)
            nn.init.zeros_(self.skip_proj.bias)

    @property
    def noise_t(self) -> tuple[int, int]:
        """The (image, feature) noise timesteps it purifies at in eval mode: the absolute measure of its
        strength, comparable across purifiers (the schedule of `config.noise_steps` steps is the method's)."""
        return self.config.image_noise_t, self.config.feature_noise_t

    @property
    def nominal_noise_t(self) -> tuple[int, int]:
        """The (image, feature) noise timesteps it was built or loaded with: what `set_strength(1)` restores."""
        return self._nominal_noise_t

    def set_noise_t(self, image_t: int, feature_t: int | None = None) -> PurifierModel:
        """Purify at these evaluation noise timesteps (absolute); returns the purifier.

        Args:
            image_t: the image's timestep, in [0, config.noise_steps).
            feature_t: the hidden features' timestep; by default `image_t` times the nominal feature/image
                ratio (3/2 for every preset), rounded.
        """
        if self.config.mask_mode != "noise":
            raise ValueError("noise timesteps apply to noise-mode purifiers; this one uses mask_mode='token'")
        if feature_t is None:
            nominal_image, nominal_feature = self._nominal_noise_t
            feature_t = round(image_t * nominal_feature / nominal_image) if nominal_image else image_t
        # PurifierConfig checks the range and type, naming the field.
        self._set_config(self.config.replace(image_noise_t=image_t, feature_noise_t=feature_t))
        return self

    def set_strength(self, strength: float) -> PurifierModel:
        """Set the evaluation noise timesteps to `strength` times the nominal ones (those the purifier was
        built or loaded with, `nominal_noise_t`); returns the purifier.

        A relative scale: strength 1 is whatever timesteps the weights were saved at, so the same strength
        means different timesteps for different weights. Say which timesteps you mean with `set_noise_t`
        (and report `noise_t`). 1 restores the nominal ones; lower values keep more image detail, higher
        ones remove more of any perturbation. Only noise-mode purifiers have a strength; the timesteps are
        clipped to the noise schedule.
        """
        if strength <= 0:
            raise ValueError(f"strength must be positive, got {strength}")
        if self.config.mask_mode != "noise":
            if strength == 1:
                return self
            raise ValueError("strength applies to noise-mode purifiers; this one uses mask_mode='token'")
        last = self.config.noise_steps - 1
        image_t, feature_t = self._nominal_noise_t
        self._set_config(self.config.replace(image_noise_t=min(round(image_t * strength), last),
                                             feature_noise_t=min(round(feature_t * strength), last)))
        return self

    def set_training_noise(self, image_t: tuple[int, int], feature_t: tuple[int, int]) -> PurifierModel:
        """Set the ranges the training noise timesteps are drawn from (image, feature; inclusive), e.g. to
        fine-tune a saved purifier around its evaluation strength; returns the purifier."""
        self._set_config(self.config.replace(train_image_noise_t=tuple(image_t),
                                             train_feature_noise_t=tuple(feature_t)))
        return self

    def _set_config(self, config: PurifierConfig) -> None:
        """The config the model runs with (and the one a saved copy records)."""
        self.config = config

    def check_backbone_of(self, state: dict[str, torch.Tensor], source: str = "a state dict") -> None:
        """Raise `StateDictMismatch` if `state` holds the weights of the other backbone (a ViT's in a conv
        purifier, or the reverse), naming both; other mismatches are left to the strict load."""
        conv_keys = any(key.startswith("blindspot.") for key in state)
        vit_keys = any(key.startswith(("encoder_blocks.", "decoder_blocks.")) for key in state)
        found = "conv" if conv_keys and not vit_keys else "vit" if vit_keys and not conv_keys else None
        if found is not None and found != self.config.backbone:
            raise StateDictMismatch(
                f"weights from {source} belong to a backbone={found!r} purifier, but this purifier is "
                f"backbone={self.config.backbone!r}: a checkpoint loads only into the backbone it was trained "
                "with (load it with the config.json saved beside it, or build PurifierConfig(backbone="
                f"{found!r}, ...))"
            )

    def noise_shapes(self, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """The shapes of the standard-normal noise one purification of (batch, 3, height, width) images draws, by
        the names `forward` replays them under (`image_noise`, `feature_noise`); empty in token mode."""
        if self.config.mask_mode != "noise":
            return {}
        padded_h, padded_w = self.pad(torch.empty(1, 3, height, width, device="meta")).shape[-2:]
        patches = (padded_h // self.config.patch_size) * (padded_w // self.config.patch_size)
        features = self.config.conv_width if self.config.backbone == "conv" else self.config.decoder_width
        return {"image_noise": (batch, 3, height, width), "feature_noise": (batch, patches, features)}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, refusing the other backbone's weights first with an error naming both."""
        self.check_backbone_of(dict(state_dict))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    # ------------------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        *,
        image_noise: torch.Tensor | None = None,
        feature_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        clamp: bool = True,
    ) -> torch.Tensor:
        """Purify a batch.

        Args:
            images: (N, 3, H, W) float images in [0, 1]. Sizes whose patch grid does not fit are padded
                (`config.pad_mode`) and cropped back.
            image_noise: optional standard-normal noise to replay for the noisy-image pass, in the
                normalised space, shaped like `images` (or like the padded images).
            feature_noise: optional standard-normal noise to replay for the hidden features, (N, L, width)
                with patches in raster order of the padded grid (width: `decoder_width`, or `conv_width` for the
                conv backbone).
            generator: random generator for the noise (and, in training, the partition).
            clamp: clamp the output to [0, 1]. Use False for training losses.

        Returns:
            (N, 3, H, W) purified images, in the dtype of `images`.
        """
        if should_check_inputs():
            check_images(images)
        if images.device != self.device:
            raise ValueError(
                f"images are on {images.device} but the purifier is on {self.device}; "
                "move one of them with `.to(device)`"
            )
        if self.config.mask_mode != "noise" and (image_noise is not None or feature_noise is not None):
            raise ValueError("image_noise and feature_noise apply only to mask_mode='noise'")
        height, width = images.shape[-2:]
        padded = self.pad(images.to(self.dtype))
        normalized = (padded - self.mean) / self.std
        if self.config.backbone == "conv":
            output = self.reconstruct_conv(normalized, image_noise, feature_noise, generator)
        else:
            output = self.reconstruct_vit(normalized, image_noise, feature_noise, generator)
        output = output * self.std + self.mean
        output = output[..., :height, :width]
        if clamp:
            output = output.clamp(0.0, 1.0)
        return output.to(images.dtype)

    def reconstruct_vit(self, normalized: torch.Tensor, image_noise: torch.Tensor | None,
                        feature_noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """The ViT: every group encoded on its own, each hidden group rebuilt by a decoder copy that sees the
        others. normalized: (B, 3, H, W) padded -> (B, 3, H, W), normalised."""
        layout = self.layout(normalized, generator)
        skip = None
        if self.config.mask_mode == "noise":
            noisy, signal, scale = self.noise_image(normalized, image_noise, generator)
            cls, features = self.encode(self.embed(torch.cat([normalized, noisy]), layout))
            decoded = self.decoder_embed_norm(self.decoder_embed(features))
            # unflatten, not chunk, so that the model exports with a free batch size (impure.export)
            visible, masked = decoded.unflatten(0, (2, -1)).unbind(0)
            hidden = self.noise_features(masked, layout, feature_noise, generator)
            cls = cls[: normalized.shape[0]]
            if self.config.noisy_skip:
                skip = self.skip(noisy, signal, scale)
        else:
            cls, features = self.encode(self.embed(normalized, layout))
            visible = self.decoder_embed_norm(self.decoder_embed(features))
            hidden = self.mask_token.expand_as(visible)
        patches = self.decode(visible, hidden, cls, layout)
        predicted = self.unpatchify(patches, layout)
        if self.config.pixel_head_width:
            predicted = self.refine(predicted, normalized, layout)
        output = self.output_conv(predicted)
        return output if skip is None else output + skip

    def reconstruct_conv(self, normalized: torch.Tensor, image_noise: torch.Tensor | None,
                         feature_noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """The conv backbone (`impure.model.blindspot`): every patch rebuilt at once from the others' pixels and,
        in noise mode, its own noised copy. normalized: (B, 3, H, W) padded -> (B, 3, H, W), normalised."""
        copy = None
        if self.config.mask_mode == "noise":
            noisy, _, _ = self.noise_image(normalized, image_noise, generator)
            copy = self.noise_copy(self.blindspot.embed_copy(noisy), feature_noise, generator)
        return self.output_conv(self.blindspot(normalized, copy))

    def noise_copy(self, copy: torch.Tensor, noise: torch.Tensor | None,
                   generator: torch.Generator | None) -> torch.Tensor:
        """The conv backbone's hidden features: each patch's embedded noisy copy, diffused to the feature timestep.

        copy: (B, C, rows, cols) -> (B, C, rows, cols); `noise`, if given, is (B, L, C) with patches in raster order.
        """
        batch, width, rows, cols = copy.shape
        if noise is None:
            noise = self._randn(copy, generator)
        else:
            expected = torch.empty(batch, rows * cols, width, device=copy.device, dtype=copy.dtype)
            noise = self._check_noise(noise, "feature_noise", expected).transpose(1, 2).reshape(copy.shape)
        signal, scale = self._noise_levels(self.config.train_feature_noise_t, self.config.feature_noise_t, (batch,),
                                           generator)
        signal, scale = signal.reshape(*signal.shape, 1, 1, 1), scale.reshape(*scale.shape, 1, 1, 1)
        return signal * copy + scale * noise

    # ------------------------------------------------------------------------------------------------
    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Pad the bottom and right so the patch grid fits (and splits into equal lattice groups for the ViT);
        check the size."""
        lattice = 1 if self.config.backbone == "conv" else 3 if self.config.num_groups == 3 else 2
        multiple = self.config.patch_size * lattice
        height, width = images.shape[-2:]
        padded_h, padded_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
        largest = self.config.max_input_size
        if max(padded_h, padded_w) > largest:
            raise ValueError(
                f"images of size {height}x{width} (padded to {padded_h}x{padded_w}) exceed the largest size "
                f"this purifier supports, {largest}x{largest} pixels (twice its image_size "
                f"{self.config.image_size}); purify them tile by tile with impure.defences.purify_tiled (as "
                "`impure purify` does), resize them, or use a purifier with a larger image_size"
            )
        if (padded_h, padded_w) == (height, width):
            return images
        return F.pad(images, (0, padded_w - width, 0, padded_h - height), mode=self.config.pad_mode)

    def layout(self, images: torch.Tensor, generator: torch.Generator | None) -> PatchLayout:
        """The partition and position window: fixed at evaluation (built once per size and device, then
        cached), random per sample in training."""
        config, batch = self.config, images.shape[0]
        rows, cols = images.shape[-2] // config.patch_size, images.shape[-1] // config.patch_size
        grid, device = config.grid_size, images.device
        if not self.training and config.partition == "lattice":
            key = (rows, cols, device)
            if key not in self._layouts:
                offsets = torch.tensor([[(grid - rows + 1) // 2, (grid - cols + 1) // 2]], device=device)
                order = lattice_partition(rows, cols, config.num_groups).to(device)[None]
                self._layouts[key] = self._make_layout(rows, cols, order, offsets, config.num_groups == 4)
            return self._layouts[key]
        if self.training:
            # A random window of the position table per sample (row and column offsets).
            draws = per_sample(lambda shape: torch.rand(shape, generator=generator, device=device), (batch, 2))
            offsets = torch.stack([draws[:, 0] * (grid - rows + 1), draws[:, 1] * (grid - cols + 1)], 1).long()
        else:
            offsets = torch.tensor([[(grid - rows + 1) // 2, (grid - cols + 1) // 2]], device=device)
        order = random_partition(batch, rows * cols, config.num_groups, generator, device)
        return self._make_layout(rows, cols, order, offsets, False)

    def _make_layout(self, rows: int, cols: int, order: torch.Tensor, offsets: torch.Tensor,
                     lattice2x2: bool) -> PatchLayout:
        window = window_rows(rows, cols, self.config.grid_size, offsets).expand(order.shape[0], -1)
        return PatchLayout(rows, cols, order, order.argsort(dim=1), torch.gather(window, 1, order), lattice2x2)

    def embed(self, normalized: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
        """normalized: (B, 3, H, W) -> patch tokens with positions, (B, L, D) in grouped order."""
        tokens = self.patch_embed(normalized)  # (B, D, rows, cols)
        batch, width = tokens.shape[:2]
        positions = self.pos_table[_repeat_index(layout.positions, batch)]
        if layout.lattice2x2:  # group 2 * (r % 2) + (c % 2), raster order inside each group
            grid = tokens.view(batch, width, layout.rows // 2, 2, layout.cols // 2, 2)
            return grid.permute(0, 3, 5, 2, 4, 1).reshape(batch, -1, width) + positions
        return _take(tokens.flatten(2).transpose(1, 2), _repeat_index(layout.order, batch)) + positions

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode every group on its own with multi-level fusion.

        tokens: (B, L, D) grouped order -> cls (B, K, D) and patch features (B, L, D), grouped order.
        """
        batch, length, width = tokens.shape
        groups = self.config.num_groups
        x = tokens.reshape(batch * groups, length // groups, width)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        tapped = []
        for index, block in enumerate(self.encoder_blocks):
            x = block(x)
            if index in self.config.fusion_taps:
                tapped.append(x)
        fused = self.encoder_norm(self.fuse(tapped, x))  # (B*K, 1 + Q, D)
        cls = fused[:, 0].reshape(batch, groups, width)
        return cls, fused[:, 1:].reshape(batch, length, width)

    def fuse(self, tapped: list[torch.Tensor], last: torch.Tensor) -> torch.Tensor:
        """Multi-level fusion: softmax(fusion_logits)-weighted sum of the projected tapped block outputs
        and the last block's output. All projections run as one matrix product over the concatenated taps.

        tapped: n tensors (N, T, D), in `fusion_taps` order; last: (N, T, D) -> (N, T, D).
        """
        weights = self.fusion_logits.softmax(dim=0)
        if not tapped:  # no fusion taps: the last block's output alone (its weight is softmax of one logit, 1)
            return weights[-1] * last
        pairs = list(zip(weights[:-1], self.fusion_proj, strict=True))
        proj_weight = torch.cat([w * proj.weight for w, proj in pairs], dim=1)
        proj_bias = sum(w * proj.bias for w, proj in pairs)
        return F.linear(torch.cat(tapped, dim=-1), proj_weight, proj_bias) + weights[-1] * last

    def noise_image(self, normalized: torch.Tensor, noise: torch.Tensor | None,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Diffuse the normalised image to the image timestep (one per sample in training).

        Returns the noisy image and its (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), each (B, 1, 1, 1) or scalar.
        """
        batch = normalized.shape[0]
        if noise is None:
            noise = self._randn(normalized, generator)
        else:
            noise = self._check_noise(noise, "image_noise", normalized)
            if noise.shape != normalized.shape:  # given at the unpadded size: no noise in the padding
                height, width = noise.shape[-2:]
                noise = F.pad(noise, (0, normalized.shape[-1] - width, 0, normalized.shape[-2] - height))
        signal, scale = self._noise_levels(self.config.train_image_noise_t, self.config.image_noise_t, (batch,),
                                           generator)
        signal, scale = signal.reshape(*signal.shape, 1, 1, 1), scale.reshape(*scale.shape, 1, 1, 1)
        return signal * normalized + scale * noise, signal, scale

    def skip(self, noisy: torch.Tensor, signal: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The noisy-pixel skip path (`config.noisy_skip`): each patch's own noised pixels, rescaled to the
        image's level (noisy / signal = image + (scale / signal) * noise), through a learned per-patch linear
        map, weighted by c(t) = d^2 / (d^2 + (scale / signal)^2), which falls from 1 as the noise grows.

        noisy: (B, 3, H, W) normalised -> (B, 3, H, W) normalised, added to the decoder's image.
        """
        d2 = self.config.skip_sigma_data ** 2
        weight = d2 / (d2 + (scale / signal) ** 2)
        # (B, 3*p*p, rows, cols): channel, then pixel row, column. The stored map is SKIP_GAIN times smaller than
        # the one applied, so that an optimizer's steps (about lr each for Adam) open it within a short fine-tune.
        patch_map = self.skip_proj(noisy / signal) * SKIP_GAIN
        return weight * F.pixel_shuffle(patch_map, self.config.patch_size)

    def noise_features(self, masked: torch.Tensor, layout: PatchLayout, noise: torch.Tensor | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        """The hidden tokens: decoder features of the noisy image, diffused to the feature timestep.

        masked: (B, L, Dd) grouped order -> (B, L, Dd); group c's timestep may differ per copy c.
        """
        batch, length, width = masked.shape
        groups = self.config.num_groups
        if noise is None:
            noise = self._randn(masked, generator)
        else:
            noise = _take(self._check_noise(noise, "feature_noise", masked), layout.order)
        signal, scale = self._noise_levels(self.config.train_feature_noise_t, self.config.feature_noise_t,
                                           (batch, groups), generator)
        signal, scale = signal.reshape(*signal.shape, 1, 1), scale.reshape(*scale.shape, 1, 1)
        shape = (batch, groups, length // groups, width)
        return (signal * masked.view(shape) + scale * noise.view(shape)).view(batch, length, width)

    def decode(self, visible: torch.Tensor, hidden: torch.Tensor, cls: torch.Tensor,
               layout: PatchLayout) -> torch.Tensor:
        """Reconstruct every group from the copy in which it is hidden.

        visible, hidden: (B, L, Dd) grouped order; cls: (B, K, D) -> patch predictions (B, L, p*p*3)
        in grouped order.
        """
        batch, length, width = visible.shape
        groups = self.config.num_groups
        per_group = length // groups
        positions = self.decoder_pos_table[layout.positions].view(-1, groups, per_group, width)
        hidden = hidden.view(batch, groups, per_group, width) + positions
        visible = (visible.view(batch, groups, per_group, width) + positions)[:, self.other_groups]
        # Copy c: its hidden group first (the only tokens whose output is needed), then its cls token
        # (from the other groups' encoder cls tokens), then the visible groups.
        copy_cls = self.decoder_cls_embed(cls[:, self.other_groups].flatten(2))  # (B, K, Dd)
        x = torch.cat([hidden, copy_cls[:, :, None], visible.flatten(2, 3)], dim=2)
        x = x.view(batch * groups, 1 + length, width)
        for block in self.decoder_blocks[:-1]:
            x = block(x)
        x = self.decoder_blocks[-1](x, num_queries=per_group)  # (B*K, Q, Dd)
        return self.decoder_pred(self.decoder_norm(x)).view(batch, length, -1)

    def refine(self, predicted: torch.Tensor, normalized: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
        """The pixel head (`config.pixel_head_width`): for each copy c, the image with group c's predicted
        pixels and every other group's input pixels goes through `pixel_head`, whose correction is added to
        group c's pixels. Copy c never holds group c's input, so the information mask holds.

        predicted, normalized: (B, 3, H, W) normalised -> (B, 3, H, W).
        """
        batch, _, height, width = predicted.shape
        groups, p = self.config.num_groups, self.config.patch_size
        patch_group = (layout.inverse // (layout.rows * layout.cols // groups)).view(-1, 1, layout.rows, layout.cols)
        pixel_group = patch_group.repeat_interleave(p, 2).repeat_interleave(p, 3)  # (1|B, 1, H, W)
        copies = torch.arange(groups, device=predicted.device).view(1, groups, 1, 1, 1)
        hidden = (pixel_group[:, None] == copies).to(predicted.dtype)  # (1|B, K, 1, H, W)
        hidden = hidden.expand(batch, -1, -1, -1, -1)
        composed = hidden * predicted[:, None] + (1 - hidden) * normalized[:, None]  # (B, K, 3, H, W)
        correction = self.pixel_head(composed.flatten(0, 1), hidden.flatten(0, 1))
        return predicted + (hidden * correction.view(batch, groups, 3, height, width)).sum(1)

    def unpatchify(self, patches: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
        """patches: (B, L, p*p*3) in grouped order, channel fastest -> images (B, 3, H, W)."""
        p, rows, cols = self.config.patch_size, layout.rows, layout.cols
        if layout.lattice2x2:  # ungroup and unpatchify in one permutation
            x = patches.view(-1, 2, 2, rows // 2, cols // 2, p, p, 3)
            return x.permute(0, 7, 3, 1, 5, 4, 2, 6).reshape(-1, 3, rows * p, cols * p)
        x = _take(patches, layout.inverse).view(-1, rows, cols, p, p, 3)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, 3, rows * p, cols * p)

    # ------------------------------------------------------------------------------------------------
    def _noise_levels(self, train_range: tuple[int, int], eval_step: int, shape: tuple[int, ...],
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) at per-sample random timesteps t in training (of
        `shape`), at the fixed evaluation timestep otherwise (one value for all)."""
        if self.training:
            low, high = train_range
            steps = per_sample(lambda s: torch.randint(low, high + 1, s, generator=generator, device=self.device),
                               shape)
            return self.noise_signal[steps], self.noise_scale[steps]
        return self.noise_signal[eval_step], self.noise_scale[eval_step]

    @staticmethod
    def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard-normal noise shaped like `like` (samples first), on its device and in its dtype."""
        return per_sample(lambda shape: torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype),
                          like.shape)

    @staticmethod
    def _check_noise(noise: torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
        """Validate replayed noise against the tensor it perturbs; return it on its device and dtype."""
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(noise, 'dtype', type(noise))}")
        expected = like.shape
        # Image noise may be given at the unpadded input size.
        fits_inside = (name == "image_noise" and noise.ndim == 4 and noise.shape[:2] == expected[:2]
                       and noise.shape[2] <= expected[2] and noise.shape[3] <= expected[3])
        if noise.shape != expected and not fits_inside:
            raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(noise.shape)}")
        if should_check_inputs() and not bool(torch.isfinite(noise).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        return noise.to(device=like.device, dtype=like.dtype)
