"""SqueezeNet v1.0 (Iandola et al. 2016) in the original Caffe layout, with the Caffe preprocessing built in."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ._loading import load_weights

__all__ = ["SqueezeNetCaffe", "squeezenet1_0_caffe"]

# Caffe's input convention: 227x227 pixels, BGR channel order, 0-255 scale, per-channel mean (B, G, R).
_INPUT_SIZE = 227
_BGR_MEAN = (104.0, 117.0, 123.0)
# (in, squeeze, expand) channels of fire2 ... fire9.
_FIRE_WIDTHS = (
    (96, 16, 64), (128, 16, 64), (128, 32, 128), (256, 32, 128),
    (256, 48, 192), (384, 48, 192), (384, 64, 256), (512, 64, 256),
)


class Fire(nn.Module):
    """Squeeze with 1x1 convolutions, then expand with parallel 1x1 and 3x3 convolutions, concatenated."""

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], dim=1)


class SqueezeNetCaffe(nn.Module):
    """SqueezeNet v1.0 for ImageNet-1k taking RGB images in [0, 1] of any size.

    The module resizes to 227x227 (bilinear), converts to BGR on a 0-255 scale and subtracts the Caffe
    channel means before the network, so callers use the usual [0, 1] RGB convention.

    Args:
        num_classes: outputs of the final 1x1 convolution.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.register_buffer("bgr_mean", torch.tensor(_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2)
        for index, widths in enumerate(_FIRE_WIDTHS, start=2):
            self.add_module(f"fire{index}", Fire(*widths))
        # Padding 1 on a 1x1 convolution is the Caffe model's own quirk; it changes the pooled average.
        self.conv_final = nn.Conv2d(512, num_classes, 1, padding=1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) RGB in [0, 1] -> (N, 3, 227, 227) mean-subtracted BGR on a 0-255 scale."""
        if images.shape[-2:] != (_INPUT_SIZE, _INPUT_SIZE):
            images = F.interpolate(images, size=(_INPUT_SIZE, _INPUT_SIZE), mode="bilinear", align_corners=False)
        return images.flip(1) * 255.0 - self.bgr_mean

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) RGB in [0, 1] -> logits (N, num_classes)."""
        x = F.relu(self.conv1(self.preprocess(images)))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.fire4(self.fire3(self.fire2(x)))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.fire8(self.fire7(self.fire6(self.fire5(x))))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = F.relu(self.conv_final(self.fire9(x)))
        return x.mean(dim=(2, 3))


def squeezenet1_0_caffe(weights: str | os.PathLike | None = None) -> SqueezeNetCaffe:
    """SqueezeNet v1.0 (Caffe layout) for ImageNet-1k, in eval mode.

    Args:
        weights: a `.safetensors` state dict to load strictly (e.g. `imagenet_squeezenet1_0_caffe.safetensors`),
            or None for random initialisation.
    """
    model = SqueezeNetCaffe()
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
