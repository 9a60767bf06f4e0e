"""Building blocks of the purifier: 2-D sin-cos position tables, timm's pre-norm ViT blocks and the pixel head."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["PixelHead", "QueryBlock", "sincos_position_table", "vit_block"]


def sincos_position_table(width: int, grid_size: int) -> torch.Tensor:
    """A fixed 2-D sin-cos position table of shape (grid_size**2, width), rows in raster order.

    Row i * grid_size + j (grid row i, column j) is [enc(j), enc(i)] with
    enc(v) = [sin(v * w_k), cos(v * w_k)] and w_k = 10000 ** (-k / (width / 4)): the first half
    encodes the column, the second half the row (the MAE convention). Computed in float64. (timm's
    `build_sincos2d_pos_embed` orders its sin and cos bands differently, [sin(row), sin(col), cos(row),
    cos(col)] at best, so the reference's checkpoints need this layout.)
    """
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    angles = coords[:, None] * omega[None, :]  # (G, width / 4)
    encoding = torch.cat([angles.sin(), angles.cos()], dim=1)  # (G, width / 2)
    rows = encoding[:, None, :].expand(grid_size, grid_size, -1)  # indexed [i, j] -> enc(i)
    cols = encoding[None, :, :].expand(grid_size, grid_size, -1)  # indexed [i, j] -> enc(j)
    return torch.cat([cols, rows], dim=-1).reshape(grid_size * grid_size, width).float()


def vit_block(width: int, heads: int, mlp_ratio: float, eps: float) -> Block:
    """timm's pre-norm ViT block as the reference builds it: fused qkv with bias, exact GELU, LayerNorm with
    `eps`, no layer scale, dropout or drop-path."""
    return Block(width, heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=eps))


class QueryBlock(Block):
    """timm's `Block` that can compute only the first `num_queries` tokens (the last decoder block, whose
    output is needed for the hidden tokens only). timm's `Attention` always computes the queries of every
    token, so this block keeps timm's modules and weights (`attn.qkv`, `attn.proj`, `mlp`, norms) and runs
    the attention itself, with the queries of the first tokens alone."""

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """x: (N, T, C) -> (N, Q, C); with `num_queries`, only the first Q tokens are computed."""
        if num_queries is None:
            return super().forward(x)
        n, t, c = x.shape
        heads = self.attn.num_heads
        normed = self.norm1(x)
        weight_q, weight_kv = self.attn.qkv.weight.split([c, 2 * c])
        bias_q, bias_kv = self.attn.qkv.bias.split([c, 2 * c])
        q = F.linear(normed[:, :num_queries], weight_q, bias_q).view(n, num_queries, heads, c // heads).transpose(1, 2)
        k, v = F.linear(normed, weight_kv, bias_kv).view(n, t, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, num_queries, c)
        x = x[:, :num_queries] + self.drop_path1(self.ls1(self.attn.proj(attended)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PixelHead(nn.Module):
    """Three 3x3 convolutions at pixel resolution (`PurifierConfig.pixel_head_width` channels, GELU between) from
    an image in the normalised space and a map of the pixels to correct (4 channels in all) to a correction of
    3 channels. The last convolution starts at zero, so a new head changes nothing."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(width, 3, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, image: torch.Tensor, to_correct: torch.Tensor) -> torch.Tensor:
        """image: (N, 3, H, W), to_correct: (N, 1, H, W) in {0, 1} -> correction (N, 3, H, W)."""
        x = F.gelu(self.conv1(torch.cat([image, to_correct], dim=1)))
        return self.conv3(F.gelu(self.conv2(x)))
