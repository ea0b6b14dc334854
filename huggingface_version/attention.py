"""Multi-head attention in Hugging Face form (paper, section 3.2), with the same masks as pytorch_version.

Shapes use one vocabulary of axes: B batch, T query positions, S key positions,
H heads, d_k = D / H the width of one head, D = d_model.

Masks are boolean and broadcast to (B, H, T, S); True means "may attend" — the same
tensors pytorch_version builds, so both versions mask exactly the same positions.

The attention kernel is chosen in one place, `config._attn_implementation`:
  "eager"  `eager_attention_forward` below: softmax(Q K^T / sqrt(d_k)) V written out, and the
           only one that returns the weights (output_attentions=True needs it)
  "sdpa"   `ALL_ATTENTION_FUNCTIONS["sdpa"]`, torch's fused scaled_dot_product_attention
           (the default: faster, never forms the (T, S) weight matrix)

This file ships with a saved model (save_pretrained copies it): it imports only torch and transformers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def encoder_mask(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, pad_id: int):
    """(B, S) ids or 0/1 mask -> (B, 1, 1, S): every query may look at every real key, no pads."""
    if attention_mask is None:
        attention_mask = input_ids != pad_id  # what pytorch_version.attention.padding_mask does
    return attention_mask.bool()[:, None, None, :]


def decoder_self_mask(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    past_length: int,
    pad_id: int,
    size: tuple[int, int],
    device: torch.device,
) -> torch.Tensor | None:
    """Look-ahead AND padding mask for decoder self-attention, (B, 1, T, past + T), or None.

    Teacher forcing (no past): position i sees real tokens at positions <= i (section 3.2.3),
    exactly pytorch_version's `tgt_mask`. One new token per decoding step: it may see every
    cached key, so no mask is needed (None lets the fused kernel take its fastest path).
    """
    B, T = size
    if past_length > 0 and T == 1 and attention_mask is None:
        return None
    # position past+i may attend to keys 0..past+i
    causal = torch.ones(T, past_length + T, dtype=torch.bool, device=device).tril(past_length)
    if attention_mask is not None:  # (B, past + T), 1 for real tokens
        keys = attention_mask.bool()
    elif past_length == 0 and input_ids is not None:
        keys = input_ids != pad_id
    else:
        return causal[None, None].expand(B, 1, T, past_length + T)
    return causal[None, None] & keys[:, None, None, :]


def decoder_only_mask(real_keys: torch.Tensor, num_queries: int) -> torch.Tensor | None:
    """Look-ahead AND padding mask of a decoder-only model (GPT), (B, 1, T, S), or None.

    `real_keys` (B, S) marks the real tokens among all S positions (the cached ones, then the T
    new ones); the T queries are the last T positions. Query i sees the real keys up to its own
    position (section 3.2.3), and always itself: a pad's own row, which nothing reads, then stays
    finite instead of a softmax over nothing (NaN). pytorch_version.gpt masks exactly so. One new
    token and no padding anywhere: it may see every key, so no mask (None) at all.
    """
    S, T = real_keys.size(1), num_queries
    if T == 1 and bool(real_keys.all()):
        return None
    look_ahead = torch.ones(T, S, dtype=torch.bool, device=real_keys.device).tril(S - T)
    itself = torch.eye(T, S, dtype=torch.bool, device=real_keys.device).roll(S - T, dims=1)
    return (look_ahead & real_keys.bool()[:, None, None, :]) | itself


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: the 90-degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions (RoPE, Su et al. 2021): turn dimension pair (j, j + d/2) of each query or key
    (B, H, T, d) by the angle m * theta_j of its position m; `cos`, `sin` (B, 1, T, d) come from
    layers.TutorialRotaryEmbedding. Then q_i . k_j depends on i - j only (transformers' Llama layout)."""
    return x * cos + rotate_half(x) * sin


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, step by step (equation 1).

    Same signature as the functions in ALL_ATTENTION_FUNCTIONS. Returns the output as
    (B, T, H, d_k), as they do, and the attention weights (B, H, T, S) before dropout:
    the pattern each head computed, which is what one wants to look at.
    """
    # 1) Scores: how well each query matches each key, scaled so the softmax stays out of
    #    its flat tails when d_k is large (section 3.2.1)
    scores = query @ key.transpose(-2, -1) * scaling  # (B, H, T, S)
    # 2) Mask: positions that must not be seen get -inf, i.e. weight 0 after the softmax
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    # 3) Softmax over the keys: each query's weights sum to 1
    weights = scores.softmax(dim=-1)
    # 4) Weighted sum of the values
    z = nn.functional.dropout(weights, p=dropout, training=module.training) @ value  # (B, H, T, d_k)
    return z.transpose(1, 2).contiguous(), weights  # (B, T, H, d_k)


class TutorialAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i).

    Used three times per model: encoder self-attention, decoder self-attention and decoder
    cross-attention (`encoder_attn`, keys and values from the encoder output), and as the GPT's
    masked self-attention (modeling_gpt.py), where `position_embeddings` = (cos, sin) turn the
    queries and keys (rotary positions). While generating, keys and values come from the `cache`
    (a transformers Cache): appended to for self-attention (the GPT caches its keys already turned),
    computed once for cross-attention.
    """

    is_causal = False  # the masks above carry causality; sdpa must not add its own

    def __init__(self, config, layer_idx: int | None = None, is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.scaling = 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout
        self.layer_idx = layer_idx  # which layer's entry of the Cache belongs to this module
        self.is_cross_attention = is_cross_attention
        D = config.hidden_size
        self.q_proj = nn.Linear(D, D)  # W^Q for all heads at once
        self.k_proj = nn.Linear(D, D)  # W^K
        self.v_proj = nn.Linear(D, D)  # W^V
        self.out_proj = nn.Linear(D, D)  # W^O

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d_k)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) queries attend to `key_value_states` (B, S, D), or to themselves when None.

        Returns the output (B, T, D) and the weights (B, H, T, S), None unless eager.
        """
        B, T, D = hidden_states.shape
        source = key_value_states if self.is_cross_attention else hidden_states

        # 1) Linear projections, then reshape for heads: (B, T, D) -> (B, H, T, d_k)
        query = self._split_heads(self.q_proj(hidden_states))
        both, own = cache, cache  # an EncoderDecoderCache holds one Cache per kind of attention
        if isinstance(both, EncoderDecoderCache):
            own = both.cross_attention_cache if self.is_cross_attention else both.self_attention_cache
        reuse = (
            self.is_cross_attention
            and isinstance(both, EncoderDecoderCache)
            and both.is_updated.get(self.layer_idx, False)
        )
        if reuse:  # the encoder output does not change while decoding: project it once
            key, value = own.layers[self.layer_idx].keys, own.layers[self.layer_idx].values
        else:
            key = self._split_heads(self.k_proj(source))
            value = self._split_heads(self.v_proj(source))
            if position_embeddings is not None:  # rotary: turn this step's queries and keys
                query, key = (
                    apply_rotary(query, *position_embeddings),
                    apply_rotary(key, *position_embeddings),
                )
            if own is not None:  # append (self) or store (cross); get back everything so far
                key, value = own.update(key, value, self.layer_idx)
                if self.is_cross_attention:
                    both.is_updated[self.layer_idx] = True

        # 2) Attention in every head at once, by the kernel the config names
        if self.config._attn_implementation in (None, "eager"):
            attend = eager_attention_forward
        else:
            attend = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        z, weights = attend(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
        )

        # 3) Concatenate the heads and mix them with W^O
        concat = z.reshape(B, T, D)  # (B, T, H, d_k) -> (B, T, D)
        return self.out_proj(concat), weights
