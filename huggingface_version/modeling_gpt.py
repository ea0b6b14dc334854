"""The decoder-only GPT (pytorch_version/gpt.py) as a Hugging Face causal language model.

    model.embed_tokens      token ids -> vectors, unscaled (GPT-2 adds them as they are)
    model.embed_positions   + a learned vector or the paper's sinusoid per position; None for rotary,
    model.rotary_emb          whose angles turn each layer's queries and keys instead
    model.layers            N x TutorialGPTLayer: masked self-attention, FFN (layers.py)
    model.layer_norm        pre-LN's last LayerNorm (GPT-2's ln_f); None post-LN
    lm_head                 Linear tied to model.embed_tokens: the next token's logits at every position

Same math and same masks as pytorch_version.gpt, so converted weights give the same logits
(huggingface_version.convert). A prompt is not encoded apart: it is the beginning of the one
sequence, and a row's real tokens are numbered 0, 1, 2, ... (`position_ids`, by default from the
`attention_mask`, as transformers' decoder-only models do), so a left-padded batch gives each row
the logits it has alone. What Hugging Face adds: `generate` (greedy, sampling, beam search) over a
`DynamicCache`, `pipeline("text-generation")`, the Auto classes and `save_pretrained`.

This file and the siblings it imports (configuration_gpt, configuration, attention, layers) import
only torch and transformers: `save_pretrained` copies them next to the weights, so a saved folder
loads with plain transformers: `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`.
Tracing (huggingface_version.hooks) and speed-ups reach the model from outside.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .attention import decoder_only_mask
from .configuration_gpt import TutorialGPTConfig
from .layers import (
    TutorialGPTLayer,
    TutorialLearnedPositions,
    TutorialRotaryEmbedding,
    TutorialSinusoidalPositions,
    is_row_mask,
    kept_positions,
)


class TutorialGPTPreTrainedModel(PreTrainedModel):
    config: TutorialGPTConfig
    config_class = TutorialGPTConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_sdpa = True  # eager and sdpa only: flash/flex kernels take no boolean masks
    _no_split_modules: ClassVar[list[str]] = ["TutorialGPTLayer"]
    accepts_loss_kwargs = False  # the loss is the plain mean over labelled positions

    def post_init(self) -> None:
        """PreTrainedModel's, then the tied copy (lm_head.weight) is a key not saved (see modeling.py)."""
        super().post_init()
        self._keys_to_ignore_on_save = set(self.all_tied_weights_keys)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-uniform, or GPT-2's N(0, 0.02) with the projections into the residual stream (out_proj,
        fc2: `writes_residual`, set by TutorialGPTLayer) 1/sqrt(2 N) smaller, so the stream's variance does
        not grow with depth; zero biases. (Each Linear knows its own scale: transformers skips, in a
        model of custom code, a module with no parameters of its own, such as a layer.)"""
        if isinstance(module, (nn.Linear, nn.Embedding)):  # the learned positions are an nn.Embedding
            if self.config.init == "xavier":
                init.xavier_uniform_(module.weight)
            else:
                deep = getattr(module, "writes_residual", False)
                init.normal_(
                    module.weight, std=0.02 / math.sqrt(2 * self.config.num_layers) if deep else 0.02
                )
        if isinstance(module, nn.Linear) and module.bias is not None:
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TutorialSinusoidalPositions):
            init.copy_(module.table, module.create_table())  # fixed tables, not learned
        elif isinstance(module, TutorialRotaryEmbedding):
            cos, sin = module.create_tables()
            init.copy_(module.cos, cos)
            init.copy_(module.sin, sin)


class TutorialGPTModel(TutorialGPTPreTrainedModel):
    """Embeddings and the stack, without the output layer; returns the last hidden state (B, T, D)."""

    def __init__(self, config: TutorialGPTConfig) -> None:
        super().__init__(config)
        D, P = config.hidden_size, config.max_position
        self.embed_tokens = nn.Embedding(config.vocab_size, D)  # no padding_idx: as pytorch_version
        self.embed_positions, self.rotary_emb = None, None
        if config.positions == "learned":
            self.embed_positions = TutorialLearnedPositions(P, D)
        elif config.positions == "sinusoidal":
            self.embed_positions = TutorialSinusoidalPositions(P, D)
        else:  # rotary: nothing added to the embeddings; the attention turns q and k
            self.rotary_emb = TutorialRotaryEmbedding(config.head_dim, P)
        self.dropout = nn.Dropout(config.dropout)  # on the embeddings
        self.layers = nn.ModuleList(TutorialGPTLayer(config, i) for i in range(config.num_layers))
        self.layer_norm = nn.LayerNorm(D) if config.norm_first else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """(B, T) ids -> (B, T, D). With a `cache`, `input_ids` holds only the new positions and
        `attention_mask` (B, past + T) covers the cached ones too (what `generate` passes).

        Which keys are real tokens: `attention_mask`; without one, the ids that are not PAD when
        nothing is cached (as pytorch_version and the encoder-decoder do), every key otherwise.
        Positions: `position_ids`, else each row's real tokens counted (cumsum - 1), which without
        padding is 0, 1, ... after the cache's length.
        """
        output_attentions = bool(output_attentions or self.config.output_attentions)
        if output_attentions and self.config._attn_implementation not in (None, "eager"):
            raise ValueError(
                "output_attentions=True needs the eager attention kernel, got "
                f"{self.config._attn_implementation!r}; call model.set_attn_implementation('eager') first"
            )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, D)
        B, T = inputs_embeds.shape[:2]
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None:
            real = attention_mask.bool()  # (B, past + T)
        elif past == 0 and input_ids is not None:
            real = input_ids != self.config.pad_token_id
        else:
            real = torch.ones(B, past + T, dtype=torch.bool, device=inputs_embeds.device)
        if real.size(1) != past + T:
            raise ValueError(
                f"attention_mask covers {real.size(1)} positions, the cache and input {past + T}"
            )
        if position_ids is None:  # pads get the position of the token before them (0 before any)
            position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        mask = decoder_only_mask(real, T)  # (B, 1, T, past + T) or None

        x = inputs_embeds
        if self.embed_positions is not None:
            x = self.embed_positions(x, position_ids=position_ids)
        rotary = self.rotary_emb(position_ids) if self.rotary_emb is not None else None  # (cos, sin)
        x = self.dropout(x)
        hidden_states, attentions = (x,), ()
        for layer in self.layers:
            x, weights = layer(x, mask, rotary, cache)
            hidden_states, attentions = hidden_states + (x,), attentions + (weights,)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=hidden_states if output_hidden_states or self.config.output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )


class TutorialGPTForCausalLM(TutorialGPTPreTrainedModel, GenerationMixin):
    """The language model: `forward` gives the next token's logits (B, T, V) and, with `labels`, the
    loss; `generate` continues the input."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TutorialGPTConfig) -> None:
        super().__init__(config)
        self.model = TutorialGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()  # ties lm_head to the embedding when tie_word_embeddings is set
        self._set_generation_defaults()

    def _set_generation_defaults(self) -> None:
        """Decoding as in pytorch_version.decoding: stop at EOS, pad after it, never emit PAD or BOS (BOS
        separates a toy task's prompt from its output). `from_pretrained` loads generation_config.json
        over these."""
        cfg, gen = self.config, self.generation_config
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
            cfg.bos_token_id,
            cfg.eos_token_id,
            cfg.pad_token_id,
        )
        gen.suppress_tokens = [cfg.pad_token_id, cfg.bos_token_id]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> TutorialGPTModel:
        return self.model

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits of the next token at each position; `labels` (B, T) are the input ids themselves
        (-100 where no loss is wanted: padding, a toy task's prompt), shifted here by one, as in
        transformers' causal LMs: position t is scored on token t + 1.

        `logits_to_keep` as in transformers: 0 keeps every position, N the last N (generate asks for 1:
        the output layer, the largest matmul, then runs on one row per sequence), a 1-D tensor those;
        here also a (B, T) boolean mask, which gives only those positions' logits, (N, V), without a
        loss (a training step needs logits only where the next token is a label: custom_trainer.py).
        """
        if use_cache is None:  # keep keys and values only when someone will decode further
            use_cache = self.config.use_cache and labels is None and not self.training
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        rows = is_row_mask(logits_to_keep)
        hidden = kept_positions(outputs.last_hidden_state, logits_to_keep)  # (B, T, D), or (N, D)
        logits = self.lm_head(hidden)  # (B, T, V), or (N, V) with a boolean mask
        loss = None
        if labels is not None and not rows:  # predict token t + 1 from position t: drop the last logit and
            # the first label
            shifted = logits[:, :-1].float()
            loss = F.cross_entropy(
                shifted.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output.to_tuple() if return_dict is False else output
