"""Where a token stands: the three ways the toolkit's models get word order.

Attention itself ignores order (permute the keys and each query's output is the same), so
position information must be put in:

    PositionalEncoding   the paper's fixed table, PE(pos, 2i) = sin(pos / 10000^(2i/D)),
                         PE(pos, 2i+1) = cos(...), added to the embeddings (section 3.5)
    LearnedPositions     one trained vector per position, added to the embeddings (GPT-2, BERT)
    RotaryEmbedding      nothing added: inside attention, each query and key is turned by an
                         angle proportional to its position (RoPE, Su et al. 2021), so the score
                         q_i . k_j depends on the distance i - j only

Positions come either as a `start` (decoding step t of the encoder-decoder) or as a (B, T)
tensor of position ids: a decoder-only batch whose prompts have different lengths numbers
each row's real tokens from 0 (see pytorch_version/gpt.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _rows(table: torch.Tensor, T: int, start: int, positions: torch.Tensor | None) -> torch.Tensor:
    """The table's rows for T positions from `start`, (T, D), or for the ids `positions`, (B, T, D)."""
    if positions is not None:
        return table[positions]
    if start + T > table.size(0):
        raise ValueError(f"sequence of {start + T} positions exceeds max_position={table.size(0)}")
    return table[start : start + T]


class PositionalEncoding(nn.Module):
    """Adds PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...) (section 3.5)."""

    def __init__(self, d_model: int, max_position: int) -> None:
        super().__init__()
        position = torch.arange(max_position).unsqueeze(1)  # (P, 1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_position, d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)
        self.register_buffer("table", table, persistent=False)  # (P, D), not a parameter

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        return x + _rows(self.table, x.size(1), start, positions)


class LearnedPositions(nn.Module):
    """Adds a trained vector per position (GPT-2's `wpe`): the model learns what order means."""

    def __init__(self, d_model: int, max_position: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_position, d_model)

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        return x + _rows(self.embedding.weight, x.size(1), start, positions)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021): rotate pairs of a head's dimensions by position-dependent angles.

    Dimension pair (j, j + d/2) of the vector at position m is turned by the angle m * theta_j,
    theta_j = base^(-2j/d): fast-turning pairs tell near positions apart, slow ones far ones.
    A rotation keeps lengths, and R(m)q . R(n)k = q . R(n - m)k, so attention scores see only the
    relative position. Pairs (j, j + d/2) rather than the paper's (2j, 2j + 1) are the layout
    transformers' Llama uses; the two differ by a fixed permutation of the head's dimensions.
    """

    def __init__(self, head_dim: int, max_position: int, base: float = 10000.0) -> None:
        super().__init__()
        assert head_dim % 2 == 0, "checked by ModelShape"
        theta = base ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (d/2,)
        angles = torch.arange(max_position).float()[:, None] * theta[None, :]  # (P, d/2): m * theta_j
        angles = torch.cat([angles, angles], dim=-1)  # (P, d): pair (j, j + d/2) shares its angle
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    @staticmethod
    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        """(x1, x2) -> (-x2, x1) on the two halves: the 90-degree turn of every pair."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d) queries or keys at `positions` (B, T) -> the same, turned."""
        if int(positions.max()) >= self.cos.size(0):
            raise ValueError(f"position {int(positions.max())} exceeds max_position={self.cos.size(0)}")
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (B, 1, T, d)
        return x * cos + self.rotate_half(x) * sin  # x cos(m theta) + (90-degree turn of x) sin(m theta)
