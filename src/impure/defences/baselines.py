"""Standard input-transformation defences (JPEG, bit-depth reduction, median filter) as purifiers.

These are the usual comparison points for a purifier: JPEG compression (Dziugaite et al. 2016,
Guo et al. 2018), bit-depth reduction and median smoothing ("feature squeezing", Xu et al. 2018).
Each is an `nn.Module` mapping images in [0, 1] to images in [0, 1], batched and on any device, so
it can stand wherever a `Purifier` does (for example inside `PurifiedClassifier`).

Gradients. JPEG and bit-depth reduction round, so their exact gradient is zero almost everywhere;
a white-box attack on them would be a false sense of robustness. They therefore pass gradients
straight through (BPDA, Athalye et al. 2018): the forward pass is the exact transform, the backward
pass treats it as the identity. The median filter is differentiable almost everywhere (the gradient
flows to the selected median pixel) and keeps its exact gradient.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from impure._util.bpda import straight_through
from impure._util.checks import check_images, check_integer

__all__ = ["JPEG", "BitDepthReduction", "MedianFilter", "is_baseline_name", "list_baselines", "load_baseline"]

# The luminance and chrominance quantisation tables of the JPEG standard (ITU T.81, Annex K), which
# libjpeg scales by the quality setting.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99), (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99), (99, 99, 99, 99, 99, 99, 99, 99),
)  # fmt: skip

# JFIF (full-range BT.601) colour conversion, as libjpeg does it.
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136, -0.714136),
    (1.0, 1.772, 0.0),
)


def _quant_table(table: tuple[tuple[int, ...], ...], quality: int) -> torch.Tensor:
    """libjpeg's quality scaling of a base quantisation table (`jpeg_quality_scaling`)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(table, dtype=torch.float64)
    return torch.clamp(torch.floor((base * scale + 50) / 100), 1, 255).float()


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix C, so that C @ block @ C.T is the 2-D DCT."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    matrix = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


class JPEG(nn.Module):
    """JPEG compression and decompression at a given quality, as batched tensor operations.

    Computes the lossy stages of baseline JPEG as libjpeg does them: JFIF colour conversion, 4:2:0
    chroma subsampling, 8x8 DCT, quantisation with the standard tables scaled by `quality`, and
    "fancy" (triangular) chroma upsampling on decoding. Entropy coding is lossless and skipped.
    Outputs agree with Pillow's libjpeg to about 1/255 on average. Gradients pass straight through
    (BPDA); see the module docstring.

    Args:
        quality: JPEG quality, 1 (smallest file) to 100.
    """

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        check_integer("JPEG quality", quality, 1, 100)
        self.quality = quality
        self.register_buffer("dct", _dct_matrix(), persistent=False)
        self.register_buffer("luma_q", _quant_table(_LUMA_TABLE, quality), persistent=False)
        self.register_buffer("chroma_q", _quant_table(_CHROMA_TABLE, quality), persistent=False)
        self.register_buffer("to_ycbcr", torch.tensor(_RGB_TO_YCBCR), persistent=False)
        self.register_buffer("to_rgb", torch.tensor(_YCBCR_TO_RGB), persistent=False)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"

    def _quantise(self, plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """DCT, quantise and invert each 8x8 block. plane: (N, H, W) level-shifted, H, W multiples of 8."""
        n, h, w = plane.shape
        blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # (N, H/8, W/8, 8, 8)
        coefficients = self.dct @ blocks @ self.dct.T
        coefficients = torch.round(coefficients / table) * table
        blocks = self.dct.T @ coefficients @ self.dct
        return blocks.transpose(2, 3).reshape(n, h, w)

    def compress(self, images: torch.Tensor) -> torch.Tensor:
        """The JPEG round trip of `images` (N, 3, H, W) in [0, 1], without gradient handling."""
        n, _, h, w = images.shape
        # libjpeg pads the image to whole 16x16 MCUs by replicating the last row and column.
        pad_h, pad_w = (-h) % 16, (-w) % 16
        rgb = F.pad(images.float() * 255, (0, pad_w, 0, pad_h), mode="replicate")
        ycbcr = torch.einsum("ij,njhw->nihw", self.to_ycbcr, rgb)
        ycbcr[:, 1:] += 128
        ycbcr = torch.round(ycbcr).clamp(0, 255)
        luma = self._quantise(ycbcr[:, 0] - 128, self.luma_q) + 128
        chroma = F.avg_pool2d(ycbcr[:, 1:], 2)  # 4:2:0 subsampling
        height, width = chroma.shape[-2:]
        chroma = self._quantise(chroma.reshape(n * 2, height, width) - 128, self.chroma_q) + 128
        # Bilinear interpolation with half-pixel centres is libjpeg's 3/4-1/4 "fancy upsampling".
        chroma = F.interpolate(chroma.reshape(n, 2, height, width), scale_factor=2, mode="bilinear")
        ycbcr = torch.cat([luma[:, None], chroma], dim=1).clamp(0, 255)
        ycbcr[:, 1:] -= 128
        rgb = torch.einsum("ij,njhw->nihw", self.to_rgb, ycbcr)
        return torch.round(rgb).clamp(0, 255)[:, :, :h, :w].to(images.dtype) / 255

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """JPEG-compress `images` (N, 3, H, W) in [0, 1]; gradients pass straight through."""
        check_images(images)
        return straight_through(images, self.compress(images.detach()))


class BitDepthReduction(nn.Module):
    """Quantise each colour channel to `bits` bits (2**bits levels); gradients pass straight through.

    Args:
        bits: bits per channel, 1 to 8.
    """

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        check_integer("bit depth", bits, 1, 8)
        self.bits = bits

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Quantise `images` (N, 3, H, W) in [0, 1] to 2**bits levels per channel."""
        check_images(images)
        levels = 2**self.bits - 1
        reduced = torch.round(images.detach().clamp(0, 1) * levels) / levels
        return straight_through(images, reduced)


class MedianFilter(nn.Module):
    """k x k median filter over each channel, with reflected borders (exact gradients).

    Args:
        kernel_size: odd window side, at least 3.
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        check_integer("median kernel_size", kernel_size, type_error=True)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"median kernel_size must be odd and >= 3, got {kernel_size}")
        self.kernel_size = kernel_size

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Median-filter `images` (N, C, H, W); output has the same shape."""
        check_images(images)
        n, c, h, w = images.shape
        k, r = self.kernel_size, self.kernel_size // 2
        if min(h, w) <= r:
            raise ValueError(f"images of size {h}x{w} are too small for a {k}x{k} median filter")
        padded = F.pad(images, (r, r, r, r), mode="reflect")
        windows = F.unfold(padded, kernel_size=k).reshape(n, c, k * k, h, w)
        return windows.median(dim=2).values


_BASELINES = {
    "jpeg": (JPEG, r"jpeg(\d+)", "jpeg75 (quality 1-100)"),
    "bits": (BitDepthReduction, r"bits(\d+)", "bits4 (1-8 bits per channel)"),
    "median": (MedianFilter, r"median(\d+)", "median3 (odd kernel side >= 3)"),
}


def list_baselines() -> list[str]:
    """Example names accepted by `load_baseline`, one per kind of defence."""
    return ["jpeg75", "bits4", "median3"]


def is_baseline_name(name: str) -> bool:
    """Whether `name` has the form of a baseline name (`jpegQ`, `bitsB`, `medianK`)."""
    return any(re.fullmatch(pattern, name.lower()) for _, pattern, _ in _BASELINES.values())


def load_baseline(name: str) -> nn.Module:
    """Build a baseline defence from its name.

    Args:
        name: `jpeg<quality>` (e.g. "jpeg75"), `bits<depth>` (e.g. "bits4") or `median<k>`
            (e.g. "median3" for a 3x3 window); case-insensitive.
    """
    if not isinstance(name, str):
        raise TypeError(f"baseline name must be a str, got {type(name).__name__}")
    for factory, pattern, _ in _BASELINES.values():
        match = re.fullmatch(pattern, name.lower())
        if match:
            return factory(int(match.group(1))).eval()
    forms = "; ".join(example for _, _, example in _BASELINES.values())
    raise ValueError(f"unknown baseline defence {name!r}; use one of the forms {forms}")
