"""The boxes of the paper's Figure 1 in Hugging Face (BART/Marian) naming.

    pytorch_version            here
    Embeddings                 TutorialScaledEmbedding  (embed_tokens)
    PositionalEncoding         TutorialSinusoidalPositions  (embed_positions)
    LearnedPositions           TutorialLearnedPositions  (embed_positions; the GPT only)
    RotaryEmbedding            TutorialRotaryEmbedding  (rotary_emb; the GPT only)
    self_attn / cross_attn     self_attn / encoder_attn
    ffn.fc1, ffn.fc2           fc1, fc2
    norm1, norm2, norm3        self_attn_layer_norm, (encoder_attn_layer_norm,) final_layer_norm
    EncoderLayer, DecoderLayer TutorialEncoderLayer, TutorialDecoderLayer
    gpt.GPTBlock               TutorialGPTLayer

The residual wiring is pytorch_version's `add_and_norm`:
post-LN (the paper, section 3.1): LayerNorm(x + Dropout(Sublayer(x)))
pre-LN  (Xiong et al. 2020):      x + Dropout(Sublayer(LayerNorm(x)))

This file ships with a saved model (save_pretrained copies it): it imports only torch and its
siblings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import TutorialAttention

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu}  # the FFN's nonlinearity: max(0, x); x * Phi(x)


class TutorialScaledEmbedding(nn.Embedding):
    """Token ids -> vectors, multiplied by sqrt(d_model) (section 3.4), like BartScaledWordEmbedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings, embedding_dim)  # no padding_idx: the PAD row trains like any other
        self.embed_scale = math.sqrt(embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.embed_scale  # (B, T) -> (B, T, D)


class TutorialSinusoidalPositions(nn.Module):
    """Adds PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...) (section 3.5).

    The table is a non-persistent buffer: it is not saved, `_init_weights` rebuilds it with
    `create_table` (from_pretrained builds models on the meta device, then initialises).
    """

    def __init__(self, max_position: int, d_model: int) -> None:
        super().__init__()
        self.max_position, self.d_model = max_position, d_model
        self.register_buffer("table", self.create_table(), persistent=False)  # (P, D)

    def create_table(self) -> torch.Tensor:
        position = torch.arange(self.max_position).unsqueeze(1)  # (P, 1)
        inv_freq = torch.exp(torch.arange(0, self.d_model, 2) * (-math.log(10000.0) / self.d_model))
        table = torch.zeros(self.max_position, self.d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)  # even dimensions: sine
        table[:, 1::2] = torch.cos(position * inv_freq)  # odd dimensions: cosine, interleaved
        return table

    def forward(
        self, inputs_embeds: torch.Tensor, past_length: int = 0, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, D) embeddings of positions past_length.. (or of `position_ids` (B, T), a GPT's batch
        whose rows number their own real tokens) -> the same plus their encodings."""
        if position_ids is not None:
            return inputs_embeds + self.table[position_ids]
        T = inputs_embeds.size(1)
        if past_length + T > self.max_position:
            raise ValueError(
                f"sequence of {past_length + T} positions exceeds max_position={self.max_position}"
            )
        return inputs_embeds + self.table[past_length : past_length + T]


class TutorialLearnedPositions(nn.Embedding):
    """Adds one trained vector per position (GPT-2's `wpe`): the model learns what order means."""

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return inputs_embeds + super().forward(position_ids)  # (B, T, D) + (B, T, D)


class TutorialRotaryEmbedding(nn.Module):
    """The angles of rotary positions (RoPE, Su et al. 2021): nothing is added to the embeddings;
    each attention turns its queries and keys with `attention.apply_rotary`.

    Dimension pair (j, j + d/2) of a head's vector at position m turns by m * theta_j, theta_j =
    base^(-2j/d). `forward(position_ids)` gives (cos, sin), each (B, 1, T, d), computed once per
    forward and shared by every layer (as transformers' Llama does). The tables are non-persistent
    buffers, rebuilt by `_init_weights` with `create_tables`.
    """

    def __init__(self, head_dim: int, max_position: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim, self.max_position, self.base = head_dim, max_position, base
        cos, sin = self.create_tables()
        self.register_buffer("cos", cos, persistent=False)  # (P, d)
        self.register_buffer("sin", sin, persistent=False)

    def create_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.base ** (-torch.arange(0, self.head_dim, 2).float() / self.head_dim)  # (d/2,)
        angles = torch.arange(self.max_position).float()[:, None] * theta[None, :]  # (P, d/2): m theta_j
        angles = torch.cat([angles, angles], dim=-1)  # (P, d): pair (j, j + d/2) shares its angle
        return angles.cos(), angles.sin()

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if int(position_ids.max()) >= self.max_position:
            raise ValueError(f"position {int(position_ids.max())} exceeds max_position={self.max_position}")
        return self.cos[position_ids][:, None], self.sin[position_ids][:, None]  # (B, 1, T, d) each


def residual(x: torch.Tensor, sublayer: Callable, norm: nn.LayerNorm, dropout: nn.Dropout, norm_first: bool):
    """Add & Norm around one sublayer; returns the new residual stream (B, T, D)."""
    if norm_first:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class _FeedForward:
    """The position-wise FFN of a layer that holds `fc1` and `fc2` (BART's layout)."""

    activation = staticmethod(torch.relu)  # the paper's; BERT's and ViT's encoder layers take GELU

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position alone (section 3.3)."""
        return self.fc2(self.activation(self.fc1(x)))  # (B, T, D) -> (B, T, d_ff) -> (B, T, D)


class TutorialEncoderLayer(_FeedForward, nn.Module):
    """Self-attention, then the FFN, each wrapped in Add & Norm (also BERT's and ViT's layer)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        D = config.hidden_size
        self.self_attn = TutorialAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, config.ffn_size)
        self.fc2 = nn.Linear(config.ffn_size, D)
        self.final_layer_norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(config.dropout)  # residual dropout, section 5.4
        self.norm_first = config.norm_first
        self.activation = ACTIVATIONS[getattr(config, "activation", "relu")]  # ReLU, or GELU (encoder-only)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, S, D) -> (B, S, D), plus the self-attention weights (B, H, S, S) when eager."""
        weights = None

        def attend(h):
            nonlocal weights
            out, weights = self.self_attn(h, attention_mask=attention_mask)
            return out

        x = residual(hidden_states, attend, self.self_attn_layer_norm, self.dropout, self.norm_first)
        x = residual(x, self.feed_forward, self.final_layer_norm, self.dropout, self.norm_first)
        return x, weights


class TutorialDecoderLayer(_FeedForward, nn.Module):
    """Masked self-attention, attention over the encoder output, then the FFN (section 3.1)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        D = config.hidden_size
        self.self_attn = TutorialAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.encoder_attn = TutorialAttention(config, layer_idx, is_cross_attention=True)
        self.encoder_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, config.ffn_size)
        self.fc2 = nn.Linear(config.ffn_size, D)
        self.final_layer_norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(config.dropout)  # residual dropout, section 5.4
        self.norm_first = config.norm_first

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        cache=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, T, D) -> (B, T, D), plus self- and cross-attention weights when eager."""
        weights: dict[str, torch.Tensor | None] = {}

        def attend_self(h):
            out, weights["self"] = self.self_attn(h, attention_mask=attention_mask, cache=cache)
            return out

        def attend_encoder(h):
            out, weights["cross"] = self.encoder_attn(
                h,
                key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                cache=cache,
            )
            return out

        p, first = self.dropout, self.norm_first
        x = residual(hidden_states, attend_self, self.self_attn_layer_norm, p, first)
        x = residual(x, attend_encoder, self.encoder_attn_layer_norm, p, first)
        x = residual(x, self.feed_forward, self.final_layer_norm, p, first)
        return x, weights["self"], weights["cross"]


class TutorialGPTLayer(nn.Module):
    """Masked self-attention, then the FFN (ReLU or GELU), each in Add & Norm: the decoder layer without
    cross-attention, as pytorch_version.gpt.GPTBlock. The look-ahead mask comes from the model
    (attention.decoder_only_mask), the rotary angles too (`position_embeddings`, None otherwise)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        D = config.hidden_size
        self.self_attn = TutorialAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, config.ffn_size)
        self.fc2 = nn.Linear(config.ffn_size, D)
        self.final_layer_norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(config.dropout)  # residual dropout
        self.norm_first = config.norm_first
        self.activation = ACTIVATIONS[config.activation]
        for projection in (self.self_attn.out_proj, self.fc2):  # the two that write into the residual stream:
            projection.writes_residual = True  # GPT-2's init makes them 1/sqrt(2 N) smaller (modeling_gpt.py)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """FFN(x) = act(x W1 + b1) W2 + b2 on each position alone: (B, T, D) -> (B, T, d_ff) -> (B, T, D)."""
        return self.fc2(self.activation(self.fc1(x)))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> (B, T, D), plus the self-attention weights (B, H, T, S) when eager; with a
        `cache`, `hidden_states` holds only the new positions."""
        weights = None

        def attend(h):
            nonlocal weights
            out, weights = self.self_attn(
                h, attention_mask=attention_mask, cache=cache, position_embeddings=position_embeddings
            )
            return out

        x = residual(hidden_states, attend, self.self_attn_layer_norm, self.dropout, self.norm_first)
        x = residual(x, self.feed_forward, self.final_layer_norm, self.dropout, self.norm_first)
        return x, weights


def is_row_mask(keep) -> bool:
    """A (B, T) boolean `logits_to_keep`: the positions whose logits a training step needs."""
    return isinstance(keep, torch.Tensor) and keep.dtype == torch.bool and keep.dim() == 2


def kept_positions(hidden: torch.Tensor, keep: int | torch.Tensor) -> torch.Tensor:
    """The rows of the last hidden state (B, T, D) the output layer runs on (transformers'
    `logits_to_keep`): 0 every position, N the last N (generate asks for 1), a 1-D tensor those
    positions; here also a (B, T) boolean mask, which gives those positions' rows, (N, D): a training
    step needs logits only where there is a label, and the output layer is the largest matmul."""
    if is_row_mask(keep):
        return hidden[keep]
    if isinstance(keep, int) and keep == 0:
        return hidden
    return hidden[:, slice(-keep, None) if isinstance(keep, int) else keep]
