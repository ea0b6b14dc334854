"""The two stacks of Figure 1: the encoder (left) and the decoder (right), over the layers of layers.py.

This file ships with a saved model (save_pretrained copies it): it imports only torch, transformers
and its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions

from .attention import decoder_self_mask, encoder_mask
from .configuration import TutorialTransformerConfig
from .layers import (
    TutorialDecoderLayer,
    TutorialEncoderLayer,
    TutorialScaledEmbedding,
    TutorialSinusoidalPositions,
)


def shift_tokens_right(labels: torch.Tensor, pad_id: int, start_id: int) -> torch.Tensor:
    """Labels (y1 .. yn EOS, -100 on padding) -> decoder input (BOS y1 .. yn, PAD on padding)."""
    shifted = labels.new_full(labels.shape, pad_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_id
    return shifted.masked_fill(shifted == -100, pad_id)


@dataclass
class TutorialEncoderOutput(BaseModelOutput):
    """BaseModelOutput plus the source padding mask (B, S), True on real tokens.

    `generate` runs the encoder once and then calls the model with `encoder_outputs` only;
    for encoder-decoders it does not infer an attention mask from PAD. Carrying the mask
    here keeps cross-attention off the padding, as in pytorch_version, and beam search
    expands it along with the encoder states.
    """

    padding_mask: torch.Tensor | None = None


class TutorialEncoder(nn.Module):
    """N encoder layers over the embedded source (section 3.1, left half of Figure 1)."""

    def __init__(self, config: TutorialTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = TutorialScaledEmbedding(config.src_vocab_size, config.hidden_size)
        self.embed_positions = TutorialSinusoidalPositions(config.max_position, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)  # on embeddings + positions (section 5.4)
        self.layers = nn.ModuleList(TutorialEncoderLayer(config, i) for i in range(config.num_layers))
        # pre-LN leaves the residual stream un-normalised, so one last LayerNorm closes the stack
        self.layer_norm = nn.LayerNorm(config.hidden_size) if config.norm_first else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> TutorialEncoderOutput:
        """(B, S) source ids -> last_hidden_state (B, S, D), the `memory` the decoder attends to."""
        mask = encoder_mask(input_ids, attention_mask, self.config.pad_token_id)  # (B, 1, 1, S)
        x = self.dropout(self.embed_positions(self.embed_tokens(input_ids)))  # section 5.4
        hidden_states, attentions = (x,), ()
        for layer in self.layers:
            x, weights = layer(x, mask)
            hidden_states, attentions = hidden_states + (x,), attentions + (weights,)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return TutorialEncoderOutput(
            last_hidden_state=x,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
            padding_mask=mask[:, 0, 0, :],
        )


class TutorialDecoder(nn.Module):
    """N decoder layers over the shifted target, attending to the encoder output (Figure 1, right)."""

    def __init__(self, config: TutorialTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = TutorialScaledEmbedding(config.tgt_vocab_size, config.hidden_size)
        self.embed_positions = TutorialSinusoidalPositions(config.max_position, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)  # on embeddings + positions (section 5.4)
        self.layers = nn.ModuleList(TutorialDecoderLayer(config, i) for i in range(config.num_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size) if config.norm_first else None

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """(B, T) target ids -> (B, T, D). With a Cache, `input_ids` holds only the new positions."""
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        past_length = cache.get_seq_length() if cache is not None else 0
        self_mask = decoder_self_mask(
            input_ids,
            attention_mask,
            past_length,
            self.config.pad_token_id,
            input_ids.shape,
            input_ids.device,
        )
        x = self.dropout(self.embed_positions(self.embed_tokens(input_ids), past_length))
        hidden_states, self_attns, cross_attns = (x,), (), ()
        for layer in self.layers:
            x, self_w, cross_w = layer(x, self_mask, encoder_hidden_states, encoder_attention_mask, cache)
            hidden_states, self_attns, cross_attns = (
                hidden_states + (x,),
                self_attns + (self_w,),
                cross_attns + (cross_w,),
            )
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=self_attns if output_attentions else None,
            cross_attentions=cross_attns if output_attentions else None,
            cache=cache if use_cache else None,
        )
