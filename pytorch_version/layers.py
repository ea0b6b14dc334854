"""The boxes of the paper's Figure 1: embeddings, positions, FFN, Add & Norm, the two layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_version.attention import KVCache, MultiHeadAttention
from pytorch_version.positions import PositionalEncoding  # noqa: F401  (the paper's box, kept importable here)
from utils.observe.tracing import HookPoint
from utils.runtime.config import ModelConfig


class Embeddings(nn.Module):
    """Token ids -> vectors, multiplied by sqrt(d_model) (section 3.4; GPT-2 does not scale)."""

    def __init__(self, vocab_size: int, d_model: int, scale: bool = True) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens) * self.scale  # (B, T) -> (B, T, D)


ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu}  # max(0, x); x * Phi(x), Phi the normal's CDF


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position alone (section 3.3); GPT: GELU.

    `gated` (the lab's GLU variant, Shazeer 2020): FFN(x) = (act(x W1 + b1) * (x V + c)) W2 + b2, the
    activation's output scaled per unit by a second linear view of the input.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", gated: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.gate = nn.Linear(d_model, d_ff) if gated else None
        self.fc2 = nn.Linear(d_ff, d_model)
        self.activation = ACTIVATIONS[activation]
        self.hook_pre_act = HookPoint()  # (B, T, d_ff) before the nonlinearity
        self.hook_post_act = HookPoint()  # after it: with ReLU, negatives are zero
        self.hook_out = HookPoint()  # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hook_post_act(self.activation(self.hook_pre_act(self.fc1(x))))
        if self.gate is not None:
            hidden = hidden * self.gate(x)
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
    residual: bool = True,
) -> torch.Tensor:
    """The residual connection around a sublayer.

    post-LN (the paper, section 3.1): LayerNorm(x + Dropout(Sublayer(x)))
    pre-LN  (Xiong et al. 2020):      x + Dropout(Sublayer(LayerNorm(x)))
    `residual=False` (the lab's ablation) drops the "x +": each layer then passes on only what its
    sublayer computed, and the gradient reaches earlier layers only through every sublayer after them.
    """
    skip = x if residual else 0.0
    if norm_first:
        return skip + dropout(sublayer(norm(x)))
    return norm(skip + dropout(sublayer(x)))


def layers_to_run(layers: nn.ModuleList, drop: float, training: bool) -> list[nn.Module]:
    """A stack's layers for one forward pass: all of them, or in training with stochastic depth
    (`drop` > 0, Huang et al. 2016) each left out with probability `drop`; a skipped layer passes
    its input on unchanged, as the identity its residual connection would make of it."""
    if not training or drop == 0.0:
        return list(layers)
    kept = torch.rand(len(layers)) >= drop
    return [layer for layer, keep in zip(layers, kept.tolist(), strict=True) if keep]


class EncoderLayer(nn.Module):
    """Self-attention, then the FFN, each wrapped in Add & Norm (also the layer of BERT and ViT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_model, d_ff = cfg.hidden_size, cfg.ffn_size
        self.self_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d_model, d_ff, cfg.activation, cfg.ffn_gate)  # ReLU (paper), GELU (BERT, ViT)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout)  # "residual dropout", section 5.4
        self.norm_first, self.residual = cfg.norm_first, cfg.residual
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, D) -> (B, S, D)."""
        x = self.hook_resid_pre(x)
        attend = lambda h: self.self_attn(h, h, src_mask)
        x = add_and_norm(x, attend, self.norm1, self.dropout, self.norm_first, self.residual)
        x = self.hook_resid_mid(x)
        x = add_and_norm(x, self.ffn, self.norm2, self.dropout, self.norm_first, self.residual)
        return self.hook_resid_post(x)


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, then the FFN (section 3.1)."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        d_model, d_ff = cfg.hidden_size, cfg.ffn_size
        self.self_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, cfg.num_heads, cfg.attention_dropout)
        self.ffn = FeedForward(d_model, d_ff, gated=cfg.ffn_gate)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.norm3 = LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout)  # "residual dropout", section 5.4
        self.norm_first, self.residual = cfg.norm_first, cfg.residual
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
            self.residual,
        )
        x = self.hook_resid_mid(x)
        x = add_and_norm(
            x,
            lambda h: self.cross_attn(h, memory, src_mask, cache, f"{self.index}.cross", static_kv=True),
            self.norm2,
            self.dropout,
            self.norm_first,
            self.residual,
        )
        x = self.hook_resid_cross(x)
        x = add_and_norm(x, self.ffn, self.norm3, self.dropout, self.norm_first, self.residual)
        return self.hook_resid_post(x)
