"""Scaled dot-product attention and multi-head attention (paper, section 3.2).

Shapes use one vocabulary of axes: B batch, T query positions, S key positions,
H heads, d_k = D / H the width of one head, D = d_model.

Masks are boolean and broadcast to (B, H, T, S); True means "may attend".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.observe.tracing import HookPoint

# The fused path's attention functions by name, as transformers' ALL_ATTENTION_FUNCTIONS: each takes
# (q, k, v, attn_mask=, dropout_p=, is_causal=) and returns softmax(q k^T / sqrt(d_k) + mask) v.
ATTENTION_FUNCTIONS = {"sdpa": F.scaled_dot_product_attention}


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, S) token ids -> (B, 1, 1, S): every query may look at every real key, no pads."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, T, T) look-ahead mask: position i may attend to positions <= i (section 3.2.3)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()[None, None]


class KVCache:
    """Keys and values kept between decoding steps, per attention module.

    Decoder self-attention appends one position per step (`append`); cross-attention
    computes its keys and values from the encoder output once and reuses them (`store`).
    Beam search reorders the batch axis with `reorder` when beams are re-ranked.
    `store` maps a key such as "0.self" to (B, H, t, d_k) keys and values.
    `padding` (B, t) says which cached positions hold real tokens, for a decoder-only model whose
    prompts of different lengths leave padding among them (None: every position is real).
    """

    def __init__(self) -> None:
        self.store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.padding: torch.Tensor | None = None

    def append(self, key: str, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, H, T, d_k) new positions under `key`; returns all positions so far."""
        if key in self.store:
            past_k, past_v = self.store[key]
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # along the positions
        self.store[key] = (k, v)
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i of every entry becomes row index[i] of before."""
        self.store = {
            key: (k.index_select(0, index), v.index_select(0, index)) for key, (k, v) in self.store.items()
        }
        if self.padding is not None:
            self.padding = self.padding.index_select(0, index)

    def __len__(self) -> int:
        """Number of decoded positions held by the self-attention entries."""
        lengths = [k.size(2) for key, (k, _) in self.store.items() if key.endswith("self")]
        return lengths[0] if lengths else 0


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i).

    Two paths compute the same thing: the explicit one (scores, mask, softmax, weighted
    sum, each through a capture point) for teaching and tracing, and the fused
    `F.scaled_dot_product_attention` used whenever nothing needs the intermediate steps.
    `why_explicit()` names the reason the fused path is skipped.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, rotary: nn.Module | None = None):
        super().__init__()
        assert d_model % num_heads == 0, "checked by ModelConfig"
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q for all heads at once
        self.k_proj = nn.Linear(d_model, d_model)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O
        self.dropout = nn.Dropout(dropout)
        self.rotary = rotary  # rotary positions (pytorch_version/positions.py) turn q and k; None: not here
        self.force_explicit = False  # set True to always take the readable path
        self.attention_function = "sdpa"  # the entry of ATTENTION_FUNCTIONS the fused path calls
        for name in ("q_proj", "k_proj", "v_proj", "q", "k", "v", "scores", "masked_scores"):
            self.add_module(f"hook_{name}", HookPoint())
        if rotary is not None:
            self.hook_q_rot, self.hook_k_rot = HookPoint(), HookPoint()  # q and k after the rotation
        for name in ("weights", "z", "concat", "out"):
            self.add_module(f"hook_{name}", HookPoint())

    def why_explicit(self) -> str | None:
        """None when the fused kernel can run; otherwise why it cannot."""
        if self.force_explicit:
            return "force_explicit is set"
        for point in (self.hook_scores, self.hook_masked_scores, self.hook_weights):
            if point.active:
                return "a hook listens to the scores or weights, which the fused kernel never forms"
        return None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d_k)

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cache_key: str = "",
        static_kv: bool = False,
        positions: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attend from `query` (B, T, D) to `key_value` (B, S, D); returns (B, T, D).

        With a `cache`, keys and values are stored under `cache_key`: appended to
        (self-attention while decoding) or, when `static_kv`, computed once (cross-attention).
        `positions` (B, T): where each query (and, in self-attention, key) stands, for rotary
        positions. `causal`: the look-ahead mask, applied in addition to `mask` (with no `mask`,
        the fused kernel applies it itself, without building it).
        """
        B, T, D = query.shape

        # 1) Linear projections, then 2) reshape for heads: (B, T, D) -> (B, H, T, d_k)
        q = self.hook_q(self._split_heads(self.hook_q_proj(self.q_proj(query))))
        if cache is not None and static_kv and cache_key in cache.store:
            k, v = cache.store[cache_key]
        else:
            k = self._split_heads(self.hook_k_proj(self.k_proj(key_value)))
            v = self._split_heads(self.hook_v_proj(self.v_proj(key_value)))
            if self.rotary is not None:
                # rotary positions: each pair of q's and k's dimensions is turned by an angle proportional
                # to the position, so q_i . k_j depends on i - j only (keys are cached already turned)
                q = self.hook_q_rot(self.rotary(q, positions))
                k = self.hook_k_rot(self.rotary(k, positions))
            if cache is not None and not static_kv:
                k, v = cache.append(cache_key, k, v)  # the past positions and this step's
            elif cache is not None:
                # stored once, read every step: contiguous heads halve the fused kernel's time
                k, v = cache.store[cache_key] = (k.contiguous(), v.contiguous())
        k, v = self.hook_k(k), self.hook_v(v)

        if causal and (mask is not None or self.why_explicit() is not None or k.size(2) != T):
            # queries are the last T of the S positions: query i sees keys up to S - T + i
            S = k.size(2)
            look_ahead = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            mask, causal = look_ahead if mask is None else look_ahead & mask, False
        if self.why_explicit() is None:
            dropout_p = self.dropout.p if self.training else 0.0
            attend = ATTENTION_FUNCTIONS[self.attention_function]
            z = attend(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
        else:
            # 3) Scores = Q K^T / sqrt(d_k): the scaling keeps the softmax out of its flat tails
            scores = self.hook_scores(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim))
            # 4) Mask: positions that must not be seen get -inf, i.e. weight 0 after softmax
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            scores = self.hook_masked_scores(scores)  # (B, H, T, S)
            # 5) Softmax over the keys: each query's weights sum to 1
            weights = self.hook_weights(scores.softmax(dim=-1))
            # 6) Weighted sum of the values
            z = self.dropout(weights) @ v  # (B, H, T, d_k)
        z = self.hook_z(z)

        # 7) Concatenate the heads and mix them with W^O
        concat = self.hook_concat(z.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return self.hook_out(self.out_proj(concat))
