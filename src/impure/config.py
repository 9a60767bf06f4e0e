"""`PurifierConfig`, every architectural choice of an IMPure purifier, and its named presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from ._util.checks import check_integer

__all__ = ["PurifierConfig", "list_presets"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PurifierConfig:
    """Architecture and purification settings of an IMPure purifier (Liu et al., arXiv 2311.15339).

    The defaults are the paper's ViT-B/16 model (`PurifierConfig.preset("paper-vitb16")`).
    """

    # Nominal image side in pixels. The position table covers a grid twice this size, so inputs up to
    # `2 * image_size` pixels per side work (smaller ones use a centred window of the table).
    image_size: int = 224
    # Side of a square patch in pixels.
    patch_size: int = 16
    # The network that rebuilds hidden patches: "vit", the paper's masked-autoencoder ViT over K patch groups, or
    # "conv", a blind-spot convolutional network that hides every patch from itself in one pass
    # (`impure.model.blindspot`). The encoder, decoder, group, fusion, skip and pixel-head fields are the ViT's.
    backbone: Literal["vit", "conv"] = "vit"
    # Conv backbone only: channels, and upward 3x3 convolutions in each of its four rotated branches.
    conv_width: int = 64
    conv_depth: int = 10
    # Encoder: token width, number of transformer blocks, attention heads.
    encoder_width: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    # Decoder: token width, number of transformer blocks, attention heads.
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # Hidden width of every MLP as a multiple of its token width.
    mlp_ratio: float = 4.0
    # Number of complementary patch groups K; each is hidden once while the others stay visible.
    num_groups: int = 4
    # Encoder blocks (0-based) whose projected outputs join the last block's in multi-level fusion.
    fusion_taps: tuple[int, ...] = (0, 2, 4, 6, 8)
    # How a hidden group's information is removed: "noise" (diffusion-style noise on the image and on
    # the decoder features, the paper's default) or "token" (a learned mask token, deterministic).
    mask_mode: Literal["noise", "token"] = "noise"
    # Patch grouping at evaluation: "lattice" (fixed interleaved grid, the paper's) or "random".
    # Training always uses a random partition and a random position window.
    partition: Literal["lattice", "random"] = "lattice"
    # Noise timesteps at evaluation for the image and for the decoder features (noise mode).
    image_noise_t: int = 400
    feature_noise_t: int = 600
    # Inclusive ranges the timesteps are drawn from (per sample) in training.
    train_image_noise_t: tuple[int, int] = (200, 599)
    train_feature_noise_t: tuple[int, int] = (200, 999)
    # Linear beta schedule of the noise, as in DDPM: betas = linspace(beta_start, beta_end, steps).
    noise_schedule: Literal["linear"] = "linear"
    noise_steps: int = 1000
    noise_beta_start: float = 1e-4
    noise_beta_end: float = 0.02
    # Per-channel RGB statistics the model normalises its [0, 1] input with.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # A 3x3 convolution over the assembled image after the prediction head (the paper's `use_conv`).
    output_conv: bool = True
    # Noise mode only, not in the paper: every output patch adds a learned per-patch linear map of its own
    # *noised* pixels, scaled down as the noise grows (c(t) = d^2 / (d^2 + (sigma_t / signal_t)^2), d =
    # `skip_sigma_data`, as denoising diffusion models' skip connections), so that fidelity is not capped by
    # what the decoder can rebuild from context. The information mask holds: a hidden patch sees its own
    # pixels only through the noisy copy. Zero-initialised, so adding it to trained weights changes nothing.
    noisy_skip: bool = False
    skip_sigma_data: float = 0.5
    # Not in the paper: channels of a pixel-resolution output head (0: none). For each decoder copy, the image
    # with its hidden group's predicted pixels in place and the visible groups' own pixels around them goes
    # through three 3x3 convolutions that add a correction to the hidden pixels only, so that a hidden patch
    # can be made continuous with its neighbours pixel by pixel (the decoder predicts each patch from its token
    # alone). The information mask holds: copy c never holds group c's input pixels. The last convolution is
    # zero-initialised, so adding the head to trained weights changes nothing.
    pixel_head_width: int = 0
    # Epsilon of every LayerNorm.
    norm_eps: float = 1e-6
    # How inputs whose patch grid does not fit are padded before purification (and cropped after):
    # a torch.nn.functional.pad mode, "replicate", "reflect" or "constant" (zeros).
    pad_mode: Literal["replicate", "reflect", "constant"] = "replicate"

    def __post_init__(self) -> None:
        self.fusion_taps = tuple(int(t) for t in self.fusion_taps)
        self.train_image_noise_t = tuple(int(t) for t in self.train_image_noise_t)  # type: ignore[assignment]
        self.train_feature_noise_t = tuple(int(t) for t in self.train_feature_noise_t)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.validate()

    # ----------------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Side of the position-embedding grid, in patches: twice the nominal image's."""
        return 2 * self.image_size // self.patch_size

    @property
    def max_input_size(self) -> int:
        """Largest input side in pixels (after padding) that the position table covers."""
        return self.grid_size * self.patch_size

    def validate(self) -> None:
        """Raise `ValueError` naming the first inconsistent field."""
        if self.backbone not in ("vit", "conv"):
            raise ValueError(f"PurifierConfig.backbone must be 'vit' or 'conv', got {self.backbone!r}")
        check_integer("PurifierConfig.conv_width", self.conv_width, 1)
        check_integer("PurifierConfig.conv_depth", self.conv_depth, 1)
        other = _CONV_ONLY if self.backbone == "vit" else _VIT_ONLY
        defaults = {f.name: f.default for f in dataclasses.fields(PurifierConfig)}
        for name in other:
            if getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"PurifierConfig.{name} applies to backbone={'conv' if self.backbone == 'vit' else 'vit'!r} only; "
                    f"a backbone={self.backbone!r} purifier cannot carry {name}={getattr(self, name)!r} (leave it at "
                    f"its default, {defaults[name]!r})"
                )
        positive = ("image_size", "patch_size", "encoder_width", "encoder_depth", "encoder_heads",
                    "decoder_width", "decoder_depth", "decoder_heads", "num_groups", "noise_steps")
        for name in positive:
            value = getattr(self, name)
            check_integer(f"PurifierConfig.{name}", value)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        for width, heads, part in ((self.encoder_width, self.encoder_heads, "encoder"),
                                   (self.decoder_width, self.decoder_heads, "decoder")):
            if width % heads:
                raise ValueError(f"{part}_width {width} must be divisible by {part}_heads {heads}")
            if width % 4:
                raise ValueError(f"{part}_width {width} must be divisible by 4 (2-D sin-cos positions)")
        if self.num_groups not in (2, 3, 4) and self.partition == "lattice":
            raise ValueError(f"the lattice partition supports num_groups 2, 3 or 4, got {self.num_groups}")
        if self.num_groups < 2:
            raise ValueError(f"num_groups must be at least 2, got {self.num_groups}")
        if any(not 0 <= t < self.encoder_depth for t in self.fusion_taps):
            raise ValueError(
                f"fusion_taps {self.fusion_taps} must be block indices in [0, {self.encoder_depth})"
            )
        if list(self.fusion_taps) != sorted(set(self.fusion_taps)):
            raise ValueError(f"fusion_taps {self.fusion_taps} must be strictly increasing block indices")
        if self.mask_mode not in ("noise", "token"):
            raise ValueError(f"mask_mode must be 'noise' or 'token', got {self.mask_mode!r}")
        if self.partition not in ("lattice", "random"):
            raise ValueError(f"partition must be 'lattice' or 'random', got {self.partition!r}")
        if self.noise_schedule != "linear":
            raise ValueError(f"noise_schedule must be 'linear', got {self.noise_schedule!r}")
        for name in ("image_noise_t", "feature_noise_t"):
            check_integer(name, getattr(self, name), 0, self.noise_steps - 1)
        for name in ("train_image_noise_t", "train_feature_noise_t"):
            low, high = getattr(self, name)
            if not 0 <= low <= high < self.noise_steps:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high < {self.noise_steps}")
        if not 0 < self.noise_beta_start < self.noise_beta_end < 1:
            raise ValueError("noise betas must satisfy 0 < noise_beta_start < noise_beta_end < 1")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"mean and std must be 3 values with std > 0, got {self.mean}, {self.std}")
        if self.pad_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"pad_mode must be 'replicate', 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.noisy_skip and self.mask_mode != "noise":
            raise ValueError("PurifierConfig.noisy_skip needs mask_mode='noise' (a mask token hides a patch's "
                             f"pixels entirely, so there is no noisy copy to skip); got mask_mode={self.mask_mode!r}")
        check_integer("PurifierConfig.pixel_head_width", self.pixel_head_width, 0)
        if not self.skip_sigma_data > 0:
            raise ValueError(f"skip_sigma_data must be positive, got {self.skip_sigma_data}")

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PurifierConfig:
        """Build a config from a mapping; unknown fields are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PurifierConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str) -> PurifierConfig:
        """Read a config saved as `config.json`."""
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of PurifierConfig fields")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> PurifierConfig:
        """A copy with some fields changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PurifierConfig:
        """A named preset, optionally with fields changed. See `list_presets()`."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {list_presets()}")
        return cls.from_dict({**_PRESETS[name], **overrides})


# The fields only one backbone uses; the other's config must leave them at their defaults.
_VIT_ONLY = ("encoder_width", "encoder_depth", "encoder_heads", "decoder_width", "decoder_depth", "decoder_heads",
             "mlp_ratio", "num_groups", "fusion_taps", "partition", "noisy_skip", "pixel_head_width")
_CONV_ONLY = ("conv_width", "conv_depth")

_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model: ViT-B/16 encoder, 512-wide 8-block decoder, ImageNet at 224 px.
    "paper-vitb16": {},
    # CIFAR-10 at 32 px with 2-pixel patches, the bundled "impure/cifar10-s" model (1.3 M parameters). Patch 2
    # ranked above patch 4 (and noise above token masks) in equal-time CPU pilots; its noise is milder than
    # the paper's, which trades robustness for the fidelity a small, briefly trained model can reach.
    "cifar10-s": dict(
        image_size=32, patch_size=2, encoder_width=128, encoder_depth=4, encoder_heads=4,
        decoder_width=128, decoder_depth=2, decoder_heads=4, fusion_taps=(0, 2),
        image_noise_t=200, feature_noise_t=300, train_image_noise_t=(0, 399), train_feature_noise_t=(0, 599),
    ),
    # "impure/cifar10"'s architecture (cifar10-s deepened to 6 / 3 blocks, noise t 80/120) with the noisy-pixel
    # skip path, the identity-capable design of docs/training.md ("Where fidelity is lost"); its first equal-time
    # pilot (benchmarks/results/fidelity-cifar10/PILOTS.md) did not beat the bundled design.
    "cifar10-skip": dict(
        image_size=32, patch_size=2, encoder_width=128, encoder_depth=6, encoder_heads=4,
        decoder_width=128, decoder_depth=3, decoder_heads=4, fusion_taps=(0, 2),
        image_noise_t=80, feature_noise_t=120, train_image_noise_t=(0, 399), train_feature_noise_t=(0, 599),
        noisy_skip=True,
    ),
    # "impure/cifar10"'s architecture with a 32-channel pixel head (`pixel_head_width`), the decoder output at
    # patch size 1 of docs/training.md ("Where fidelity is lost"); see benchmarks/results/fidelity-cifar10/PILOTS.md.
    # The bundled "impure/cifar10" has it since campaign stretch 13 (with training noise t 0-199 / 0-299).
    "cifar10-pixel": dict(
        image_size=32, patch_size=2, encoder_width=128, encoder_depth=6, encoder_heads=4,
        decoder_width=128, decoder_depth=3, decoder_heads=4, fusion_taps=(0, 2),
        image_noise_t=80, feature_noise_t=120, train_image_noise_t=(0, 399), train_feature_noise_t=(0, 599),
        pixel_head_width=32,
    ),
    # The convolutional reconstructor (`backbone="conv"`, `impure.model.blindspot`) at CIFAR-10 size: a blind-spot
    # network over the 16 x 16 grid of 2 x 2 patches, with "impure/cifar10"'s noise timesteps and its training noise.
    # No output convolution, so that the information mask holds exactly.
    "cifar10-conv": dict(
        image_size=32, patch_size=2, backbone="conv", conv_width=64, conv_depth=10, output_conv=False,
        image_noise_t=80, feature_noise_t=120, train_image_noise_t=(0, 199), train_feature_noise_t=(0, 299),
    ),
    # The reference's small test configuration (`../shared/reference/ref_small_config.json`).
    "reference-small": dict(
        image_size=32, patch_size=4, encoder_width=96, encoder_depth=10, encoder_heads=4,
        decoder_width=64, decoder_depth=2, decoder_heads=4,
    ),
    # A minimal model for tests and smoke runs; not meant to purify anything.
    "tiny": dict(
        image_size=32, patch_size=4, encoder_width=32, encoder_depth=2, encoder_heads=2,
        decoder_width=32, decoder_depth=1, decoder_heads=2, fusion_taps=(0,),
    ),
    # The conv backbone's minimal model, for tests and smoke runs.
    "tiny-conv": dict(image_size=32, patch_size=4, backbone="conv", conv_width=16, conv_depth=2, output_conv=False),
}


def list_presets() -> list[str]:
    """Names accepted by `PurifierConfig.preset`."""
    return sorted(_PRESETS)
