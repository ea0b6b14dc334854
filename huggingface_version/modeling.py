"""The Transformer of "Attention Is All You Need" as a Hugging Face model (BART/Marian layout).

    model.encoder   embed_tokens (x sqrt(d_model)) + embed_positions -> layers -> [layer_norm]
    model.decoder   embed_tokens + embed_positions -> layers (attend to the encoder) -> [layer_norm]
    lm_head         Linear tied to model.decoder.embed_tokens (section 3.4)

Same math and same masks as pytorch_version, so converted weights give the same logits
(huggingface_version.convert). What Hugging Face adds: `from_pretrained`/`save_pretrained`,
the Auto classes, `generate` (greedy, beam search, sampling) over a `Cache`, and the Trainer.

This file and its siblings (configuration, attention, layers, stacks) import only torch and
transformers: `save_pretrained` copies them next to the weights (huggingface_version/__init__.py
registers the classes with `register_for_auto_class`), so a saved folder loads with plain
transformers: `AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)`. The
toolkit's tracing (huggingface_version.hooks) and speed-ups (utils/fast) reach the model from
outside.

Attention outputs are gathered by passing `output_attentions` down explicitly. transformers 5
also offers `_can_record_outputs` + `@capture_outputs`, which installs permanent forward hooks
on first use; explicit passing keeps the data flow visible and the model hook-free, so the
tracker in huggingface_version.hooks sees only its own hooks.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from .attention import encoder_mask
from .configuration import TutorialTransformerConfig
from .layers import TutorialSinusoidalPositions, is_row_mask, kept_positions
from .stacks import TutorialDecoder, TutorialEncoder, shift_tokens_right


class TutorialPreTrainedModel(PreTrainedModel):
    config: TutorialTransformerConfig
    config_class = TutorialTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_sdpa = True  # eager and sdpa only: flash/flex kernels take no boolean masks
    _no_split_modules: ClassVar[list[str]] = ["TutorialEncoderLayer", "TutorialDecoderLayer"]
    accepts_loss_kwargs = False  # the loss is plain; custom_trainer.py normalises it for accumulation

    def post_init(self) -> None:
        """PreTrainedModel's, then: the tied copies (lm_head.weight, and with share_embeddings the decoder's
        embedding) are keys not saved. save_pretrained writes a tied tensor once, since safetensors holds
        no aliases, and says so nowhere; the Trainer, resuming, loads checkpoint-N/ with strict=False and
        warns of every missing key that is not in `_keys_to_ignore_on_save`, but re-ties those. Naming the
        tied keys here makes a resume tie them back instead of warning that lm_head.weight is missing."""
        super().post_init()
        self._keys_to_ignore_on_save = set(self.all_tied_weights_keys)  # empty unless tie_word_embeddings

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-uniform matrices, zero biases: as pytorch_version and the Annotated Transformer."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TutorialSinusoidalPositions):
            init.copy_(module.table, module.create_table())  # a fixed table, not learned


class TutorialTransformerModel(TutorialPreTrainedModel):
    """Encoder + decoder without the output layer; returns the decoder's last hidden state."""

    def __init__(self, config: TutorialTransformerConfig) -> None:
        super().__init__(config)
        self.encoder = TutorialEncoder(config)
        self.decoder = TutorialDecoder(config)
        if config.share_embeddings:  # one vocabulary, one matrix (needs tie_word_embeddings)
            self._tied_weights_keys = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embed_tokens = value

    def get_encoder(self, modality: str | None = None) -> TutorialEncoder:
        return self.encoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        """Encoder and decoder: the decoder's last hidden state (B, T, D) and what was asked for."""
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        if output_attentions and self.config._attn_implementation not in (None, "eager"):
            raise ValueError(
                "output_attentions=True needs the eager attention kernel, got "
                f"{self.config._attn_implementation!r}; call model.set_attn_implementation('eager') first"
            )
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        if encoder_outputs is None:  # generate runs the encoder once and passes its output on
            encoder_outputs = self.encoder(input_ids, attention_mask, output_attentions, output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        memory = encoder_outputs.last_hidden_state  # (B, S, D)
        if attention_mask is None and input_ids is None:  # only the encoder output was given
            attention_mask = getattr(encoder_outputs, "padding_mask", None)
        if attention_mask is None and input_ids is None:
            memory_mask = None  # nothing says where the padding is: every source position is real
        else:
            memory_mask = encoder_mask(input_ids, attention_mask, self.config.pad_token_id)
        decoder_outputs = self.decoder(
            decoder_input_ids,
            memory,
            attention_mask=decoder_attention_mask,
            encoder_attention_mask=memory_mask,
            cache=cache,
            use_cache=bool(use_cache),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=memory,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            cache=decoder_outputs.cache,
        )


class TutorialTransformerForConditionalGeneration(TutorialPreTrainedModel, GenerationMixin):
    """The full model: `forward` gives logits (B, T, V_tgt) and, with `labels`, the loss; `generate`
    decodes."""

    def __init__(self, config: TutorialTransformerConfig) -> None:
        super().__init__(config)
        self.model = TutorialTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.tgt_vocab_size, bias=False)  # pre-softmax
        # "we share the same weight matrix between the two embedding layers and the pre-softmax
        # linear transformation" (section 3.4); PreTrainedModel ties when tie_word_embeddings is set
        if config.share_embeddings:
            self._tied_weights_keys = {
                "lm_head.weight": "model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight": "model.encoder.embed_tokens.weight",
            }
        else:
            self._tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}
        self.post_init()
        self._set_generation_defaults()

    def _set_generation_defaults(self) -> None:
        """Decoding as in pytorch_version.decoding: start from BOS, stop at EOS, pad after it, never
        emit PAD or BOS (ruled out the same way there). Pass `max_new_tokens` to `generate`.
        `from_pretrained` then loads the saved generation_config.json over these."""
        cfg, gen = self.config, self.generation_config
        gen.decoder_start_token_id = cfg.decoder_start_token_id
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
            cfg.bos_token_id,
            cfg.eos_token_id,
            cfg.pad_token_id,
        )
        gen.suppress_tokens = [cfg.pad_token_id, cfg.bos_token_id]

    def get_encoder(self, modality: str | None = None) -> TutorialEncoder:
        return self.model.encoder

    def get_decoder(self) -> TutorialDecoder:
        return self.model.decoder

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.encoder.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by DataCollatorForSeq2Seq: the decoder input is the target shifted right (BOS first)."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> Seq2SeqLMOutput | tuple:
        """Teacher forcing with `decoder_input_ids` (BOS y1 y2 ...), or built from `labels` (y1 y2 ... EOS).

        `labels` use -100 for positions that carry no loss; the loss here is plain
        cross-entropy (label smoothing is the trainer's business, see custom_trainer.py).
        `logits_to_keep` as in transformers: 0 keeps every position, N the last N (generate asks
        for 1), a 1-D tensor those positions; here also a (B, T) boolean mask, which gives only
        those positions' logits, (N, V), and labels: a training step needs logits only where
        there is a label, and the output layer, the largest matmul of the model, skips the rest.
        """
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if use_cache is None:  # keep keys and values only when someone will decode further
            use_cache = self.config.use_cache and labels is None and not self.training
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = kept_positions(outputs.last_hidden_state, logits_to_keep)  # (B, T, D), or (N, D)
        if is_row_mask(logits_to_keep) and labels is not None:
            labels = labels[logits_to_keep]  # (N,)
        logits = self.lm_head(hidden)  # (B, T, V), or (N, V) with a boolean mask
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )
        return output.to_tuple() if return_dict is False else output
