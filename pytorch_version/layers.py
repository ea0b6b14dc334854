"""The boxes of the paper's Figure 1: embeddings, positions, FFN, Add & Norm, the two layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from pytorch_version.attention import KVCache, MultiHeadAttention
from utils.observe.tracing import HookPoint
from utils.runtime.config import ModelConfig


class Embeddings(nn.Module):
    """Token ids -> vectors, multiplied by sqrt(d_model) (section 3.4)."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens) * self.scale  # (B, T) -> (B, T, D)


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

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = x.size(1)
        if start + T > self.table.size(0):
            raise ValueError(f"sequence of {start + T} positions exceeds max_position={self.table.size(0)}")
        return x + self.table[start : start + T]


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position alone (section 3.3)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.hook_pre_act = HookPoint()  # (B, T, d_ff) before the ReLU
        self.hook_post_act = HookPoint()  # after the ReLU: negatives are zero
        self.hook_out = HookPoint()  # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hook_post_act(torch.relu(self.hook_pre_act(self.fc1(x))))
        return self.hook_out(self.fc2(hidden))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with capture points on its input and output."""

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.hook_in = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_out(super().forward(self.hook_in(x)))


def add_and_norm(
    x: torch.Tensor,
    sublayer: Callable[[torch.Tensor], torch.Tensor],
    norm: LayerNorm,
    dropout: nn.Dropout,
    norm_first: bool,
) -> torch.Tensor:
    """The residual connection around a sublayer.

    post-LN (the paper, section 3.1): LayerNorm(x + Dropout(Sublayer(x)))
    pre-LN  (Xiong et al. 2020):      x + Dropout(Sublayer(LayerNorm(x)))
    """
    if norm_first:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention, then the FFN, each wrapped in Add & Norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_model, d_ff = cfg.hidden_size, cfg.ffn_size
        self.self_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout)  # "residual dropout", section 5.4
        self.norm_first = cfg.norm_first
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, D) -> (B, S, D)."""
        x = self.hook_resid_pre(x)
        attend = lambda h: self.self_attn(h, h, src_mask)
        x = add_and_norm(x, attend, self.norm1, self.dropout, self.norm_first)
        x = self.hook_resid_mid(x)
        x = add_and_norm(x, self.ffn, self.norm2, self.dropout, self.norm_first)
        return self.hook_resid_post(x)


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, then the FFN (section 3.1)."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        d_model, d_ff = cfg.hidden_size, cfg.ffn_size
        self.self_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.norm3 = LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout)  # "residual dropout", section 5.4
        self.norm_first = cfg.norm_first
        self.index = index  # names this layer's entries in a KVCache
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()  # after self-attention
        self.hook_resid_cross = HookPoint()  # after cross-attention
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None,
        tgt_mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with a `cache`, `x` holds only the new positions."""
        x = self.hook_resid_pre(x)
        x = add_and_norm(
            x,
            lambda h: self.self_attn(h, h, tgt_mask, cache, f"{self.index}.self"),
            self.norm1,
            self.dropout,
            self.norm_first,
        )
        x = self.hook_resid_mid(x)
        x = add_and_norm(
            x,
            lambda h: self.cross_attn(h, memory, src_mask, cache, f"{self.index}.cross", static_kv=True),
            self.norm2,
            self.dropout,
            self.norm_first,
        )
        x = self.hook_resid_cross(x)
        x = add_and_norm(x, self.ffn, self.norm3, self.dropout, self.norm_first)
        return self.hook_resid_post(x)
