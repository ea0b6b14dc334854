"""The two stacks of Figure 1: the encoder (left) and the decoder (right), over the layers of layers.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions

from huggingface_version.attention import decoder_self_mask, encoder_mask
from huggingface_version.configuration import TutorialTransformerConfig
from huggingface_version.layers import (
    TutorialDecoderLayer,
    TutorialEncoderLayer,
    TutorialScaledEmbedding,
    TutorialSinusoidalPositions,
)
from utils.fast.dropout import dropout as fast_dropout
from utils.fast.packing import Rows

# transformers 5.24 renamed `past_key_values` to `cache`: generate passes `cache=` and model outputs
# have a `cache` field. The models here take either name and fill the field this version has.
CACHE_FIELD = (
    "cache"
    if "cache" in BaseModelOutputWithPastAndCrossAttentions.__dataclass_fields__
    else "past_key_values"
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
        rows: Rows | None = None,
        **kwargs,
    ) -> TutorialEncoderOutput:
        """(B, S) source ids -> last_hidden_state (B, S, D), the `memory` the decoder attends to.
        With `rows` (utils/fast/packing.py): (N, D), the real tokens' rows only."""
        mask = encoder_mask(input_ids, attention_mask, self.config.pad_token_id)  # (B, 1, 1, S)
        x = self.embed_positions(self.embed_tokens(input_ids))
        if rows is not None:
            x = rows.src.pack(x)
        x = fast_dropout(x, self.config.dropout, self.training)  # section 5.4
        hidden_states, attentions = (x,), ()
        for layer in self.layers:
            x, weights = layer(x, mask, rows)
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
        self.layers = nn.ModuleList(TutorialDecoderLayer(config, i) for i in range(config.num_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size) if config.norm_first else None

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        rows: Rows | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """(B, T) target ids -> (B, T, D). With a Cache, `input_ids` holds only the new positions.
        With `rows` (utils/fast/packing.py) the encoder states and the output are packed rows."""
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        self_mask = decoder_self_mask(
            input_ids,
            attention_mask,
            past_length,
            self.config.pad_token_id,
            input_ids.shape,
            input_ids.device,
        )
        x = self.embed_positions(self.embed_tokens(input_ids), past_length)
        if rows is not None:
            x = rows.tgt.pack(x)
        x = fast_dropout(x, self.config.dropout, self.training)
        hidden_states, self_attns, cross_attns = (x,), (), ()
        for layer in self.layers:
            x, self_w, cross_w = layer(
                x, self_mask, encoder_hidden_states, encoder_attention_mask, past_key_values, rows
            )
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
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )
