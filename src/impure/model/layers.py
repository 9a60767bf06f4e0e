"""Building blocks of the purifier: 2-D sin-cos position tables and a pre-norm ViT block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sincos_position_table", "TransformerBlock"]


def sincos_position_table(width: int, grid_size: int) -> torch.Tensor:
    """A fixed 2-D sin-cos position table of shape (grid_size**2, width), rows in raster order.

    Row i * grid_size + j (grid row i, column j) is [enc(j), enc(i)] with
    enc(v) = [sin(v * w_k), cos(v * w_k)] and w_k = 10000 ** (-k / (width / 4)): the first half
    encodes the column, the second half the row (the MAE convention). Computed in float64.
    """
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    angles = coords[:, None] * omega[None, :]  # (G, width / 4)
    encoding = torch.cat([angles.sin(), angles.cos()], dim=1)  # (G, width / 2)
    rows = encoding[:, None, :].expand(grid_size, grid_size, -1)  # indexed [i, j] -> enc(i)
    cols = encoding[None, :, :].expand(grid_size, grid_size, -1)  # indexed [i, j] -> enc(j)
    return torch.cat([cols, rows], dim=-1).reshape(grid_size * grid_size, width).float()


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv) that can restrict its queries to the leading tokens."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """x: (N, T, C) -> (N, Q, C), attending from the first Q = num_queries tokens (all if None)."""
        n, t, c = x.shape
        if num_queries is None:
            qkv = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            # Only the queries of the first tokens are needed: skip the other rows of q.
            weight_q, weight_kv = self.qkv.weight.split([c, 2 * c])
            bias_q, bias_kv = self.qkv.bias.split([c, 2 * c])
            q = F.linear(x[:, :num_queries], weight_q, bias_q)
            q = q.view(n, num_queries, self.heads, c // self.heads).transpose(1, 2)
            kv = F.linear(x, weight_kv, bias_kv).view(n, t, 2, self.heads, c // self.heads)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, Q, C / heads)
        return self.proj(out.transpose(1, 2).reshape(n, -1, c))


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """A pre-norm ViT block (attention and MLP residuals, no dropout or layer scale)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """x: (N, T, C) -> (N, Q, C); with `num_queries`, only the first Q tokens are computed."""
        residual = x if num_queries is None else x[:, :num_queries]
        x = residual + self.attn(self.norm1(x), num_queries)
        return x + self.mlp(self.norm2(x))
