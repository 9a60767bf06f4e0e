"""The convolutional reconstructor (`PurifierConfig.backbone = "conv"`): IMPure's information mask as a blind-spot
network over the patch grid (J-invariance, Batson and Royer, "Noise2Self", ICML 2019; the four rotated branches of
Laine et al., "High-Quality Self-Supervised Deep Image Denoising", NeurIPS 2019).

After a space-to-depth by the patch size every patch is one position of a (rows, cols) grid. Four branches, the same
stack of upward-only 3x3 convolutions applied to the grid turned by 0, 90, 180 and 270 degrees, each shifted down by
one row, see the half-planes strictly above, left of, below and right of a position: together, every patch but its
own. A head of 1x1 convolutions combines them with the patch's own *noised* copy (diffused to the image timestep,
embedded, then diffused again to the feature timestep, as the ViT's hidden tokens are), so that a patch's output
depends on its own input pixels only through that copy; in token mode there is no copy at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlindSpotNet", "UpwardConv"]


class UpwardConv(nn.Conv2d):
    """A 3x3 convolution whose output at row i sees input rows i-2..i only (padded above, never below)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 2, 0)))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of every grid position on its own: (N, C, H, W) -> (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BlindSpotNet(nn.Module):
    """Predict every patch from the others in one pass (the information mask of IMPure, all groups at once).

    Args:
        patch_size: side of a patch in pixels; a patch is one grid position of 3 * patch_size**2 channels.
        width: channels of the branches and the head.
        depth: upward convolutions per branch (each reaches two more rows above).
        noisy_copy: feed each patch's own noised copy to the head (noise mode); without it, a patch's output does
            not depend on its own pixels at all (token mode).
        eps: epsilon of the copy's LayerNorm.
    """

    def __init__(self, patch_size: int, width: int, depth: int, noisy_copy: bool, eps: float) -> None:
        super().__init__()
        channels = 3 * patch_size * patch_size
        self.patch_size = patch_size
        self.branch = nn.ModuleList([UpwardConv(channels, width)]
                                    + [UpwardConv(width, width) for _ in range(depth - 1)])
        self.fuse_context = nn.Conv2d(4 * width, width, kernel_size=1)
        if noisy_copy:
            self.copy_embed = nn.Conv2d(channels, width, kernel_size=1)
            self.copy_norm = ChannelNorm(width, eps=eps)
            self.fuse_copy = nn.Conv2d(width, width, kernel_size=1, bias=False)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(width, width, kernel_size=1), nn.GELU(),
                                  nn.Conv2d(width, channels, kernel_size=1))

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) -> patch grid (N, 3*p*p, H/p, W/p)."""
        return F.pixel_unshuffle(images, self.patch_size)

    def unpatchify(self, grid: torch.Tensor) -> torch.Tensor:
        """grid: (N, 3*p*p, rows, cols) -> images (N, 3, rows*p, cols*p)."""
        return F.pixel_shuffle(grid, self.patch_size)

    def embed_copy(self, noisy: torch.Tensor) -> torch.Tensor:
        """noisy: the noised image (N, 3, H, W) -> each patch's own features (N, width, rows, cols), unit scale."""
        return self.copy_norm(self.copy_embed(self.patchify(noisy)))

    def context(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) -> features (N, 4*width, rows, cols) of every patch's surroundings, never of itself."""
        grid = self.patchify(images)
        if grid.shape[-2] == grid.shape[-1]:  # square: the four turns in one batch
            turned = torch.cat([torch.rot90(grid, k, dims=(2, 3)) for k in range(4)])
            # unflatten, not chunk, so that the model exports with a free batch size (impure.export)
            seen = self.above(turned).unflatten(0, (4, -1)).unbind(0)
        else:  # the 0/180 and 90/270 turns have different shapes
            seen = [None] * 4
            for ks in ((0, 2), (1, 3)):
                turned = torch.cat([torch.rot90(grid, k, dims=(2, 3)) for k in ks])
                pair = self.above(turned).unflatten(0, (2, -1)).unbind(0)
                for k, part in zip(ks, pair, strict=True):
                    seen[k] = part
        return torch.cat([torch.rot90(part, -k, dims=(2, 3)) for k, part in enumerate(seen)], dim=1)

    def above(self, grid: torch.Tensor) -> torch.Tensor:
        """grid: (B, C, rows, cols) -> features (B, width, rows, cols) at row i of rows < i only."""
        x = grid
        for index, conv in enumerate(self.branch):
            x = conv(x if index == 0 else F.gelu(x))
        return F.pad(F.gelu(x), (0, 0, 1, 0))[..., :-1, :]  # shift down one row: the blind spot

    def forward(self, images: torch.Tensor, copy: torch.Tensor | None) -> torch.Tensor:
        """images: normalised (N, 3, H, W); copy: each patch's own hidden features (N, width, rows, cols), or None
        in token mode -> the reconstruction (N, 3, H, W), normalised."""
        hidden = self.fuse_context(self.context(images))
        if copy is not None:
            hidden = hidden + self.fuse_copy(copy)
        return self.unpatchify(self.head(hidden))
