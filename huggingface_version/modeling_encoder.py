"""The encoder-only family (pytorch_version/encoder_only.py) as Hugging Face models: BERT and ViT.

    pytorch_version (BERT, ViT)     here
    src_embed                       model.embed_tokens            token ids -> vectors, unscaled
    patch_embed.projection          model.patch_embeddings.projection   a ViT's P x P patches -> vectors
    cls_token                       model.cls_token               a ViT's [CLS]: a vector, not an id
    positions                       model.embed_positions         learned (BERT's, ViT's) or sinusoidal
    embed_norm                      model.embed_layer_norm        BERT's LayerNorm on the sum
    encoder.layers.{i}              model.layers.{i}              TutorialEncoderLayer (layers.py)
    encoder.norm                    model.layer_norm              pre-LN's last LayerNorm (ViT)
    head.dense, .norm, .output      lm_head.dense, .layer_norm, .decoder (its weight: model.embed_tokens's)
    head.pooler                     pooler.dense                  [CLS] through Linear + tanh (BERT)
    head.classifier                 classifier

No look-ahead mask: every token sees every other real one (attention.encoder_mask: the padding of
the `attention_mask`, or of the pad id when none is given), so converted weights give the same
logits as pytorch_version (huggingface_version.convert). What Hugging Face adds: transformers'
output classes with the loss from `labels` (-100: no label, as everywhere in transformers),
the Auto classes, `pipeline("fill-mask" | "text-classification" | "image-classification")`
(tokenization.encoder_tokenizer_fast, image_processing_encoder.py) and `save_pretrained`.

This file and the siblings it imports (configuration_encoder, configuration, attention, layers)
import only torch and transformers: a saved folder loads with plain transformers and
`trust_remote_code=True`, as a GPT's does (huggingface_version/__init__.py).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutput,
    ImageClassifierOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from .attention import encoder_mask
from .configuration_encoder import TutorialBertConfig, TutorialEncoderConfig, TutorialViTConfig
from .layers import (
    ACTIVATIONS,
    TutorialEncoderLayer,
    TutorialLearnedPositions,
    TutorialSinusoidalPositions,
    is_row_mask,
    kept_positions,
)


def _positions(config: TutorialEncoderConfig, count: int) -> nn.Module:
    if config.positions == "sinusoidal":
        return TutorialSinusoidalPositions(count, config.hidden_size)
    return TutorialLearnedPositions(count, config.hidden_size)


class TutorialEncoderPreTrainedModel(PreTrainedModel):
    """What BERT and ViT share: the initialisation, the stack of layers, the attention kernels."""

    config: TutorialEncoderConfig
    base_model_prefix = "model"
    _supports_sdpa = True  # eager and sdpa only: flash/flex kernels take no boolean masks
    _no_split_modules: ClassVar[list[str]] = ["TutorialEncoderLayer"]
    accepts_loss_kwargs = False  # the loss is the plain mean; the trainer normalises it itself

    def post_init(self) -> None:
        """PreTrainedModel's, then the tied copy (lm_head.decoder.weight) is a key not saved (modeling.py)."""
        super().post_init()
        self._keys_to_ignore_on_save = set(self.all_tied_weights_keys)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT's and ViT's N(0, 0.02) ("normal"), or Xavier-uniform; zero biases; ViT's [CLS] N(0, 0.02)."""
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            if self.config.init == "xavier":
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, std=0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TutorialSinusoidalPositions):
            init.copy_(module.table, module.create_table())  # a fixed table, not learned
        elif isinstance(module, TutorialViTModel):
            init.normal_(module.cls_token, std=0.02)

    def _build_stack(self, config: TutorialEncoderConfig) -> None:
        self.dropout = nn.Dropout(config.dropout)  # on the embeddings
        self.layers = nn.ModuleList(TutorialEncoderLayer(config, i) for i in range(config.num_layers))
        # pre-LN leaves the residual stream un-normalised, so one last LayerNorm closes the stack
        self.layer_norm = nn.LayerNorm(config.hidden_size) if config.norm_first else None

    def _run_stack(self, x, mask, output_attentions, output_hidden_states) -> BaseModelOutput:
        """(B, S, D) embeddings -> the encoder's output: every token read in the light of all the others."""
        output_attentions = bool(output_attentions or self.config.output_attentions)
        kernel = self.config._attn_implementation
        if output_attentions and kernel not in (None, "eager"):  # only eager forms the weights
            raise ValueError(f"output_attentions=True needs the eager attention kernel, got {kernel!r}; call "
                             "model.set_attn_implementation('eager') first")  # fmt: skip
        hidden_states, attentions = (x,), ()
        for layer in self.layers:
            x, weights = layer(x, mask)
            hidden_states, attentions = hidden_states + (x,), attentions + (weights,)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        keep = output_hidden_states or self.config.output_hidden_states
        return BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states if keep else None,
                               attentions=attentions if output_attentions else None)  # fmt: skip


class TutorialBertModel(TutorialEncoderPreTrainedModel):
    """BERT's embeddings and encoder: (B, S) ids -> (B, S, D), pytorch_version's `memory`."""

    config_class = TutorialBertConfig
    main_input_name = "input_ids"

    def __init__(self, config: TutorialBertConfig) -> None:
        super().__init__(config)
        D = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, D)  # unscaled: BERT adds them as they are
        self.embed_positions = _positions(config, config.max_position)
        self.embed_layer_norm = nn.LayerNorm(D) if config.embedding_norm else None
        self._build_stack(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, **kwargs) -> BaseModelOutput:  # fmt: skip
        """Which keys are real tokens: `attention_mask` (B, S), else the ids that are not PAD."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        S = x.size(1)
        if self.config.max_position < S:
            raise ValueError(f"an input of {S} tokens exceeds max_position={self.config.max_position}")
        x = self.embed_positions(x, position_ids=torch.arange(S, device=x.device)[None])
        if self.embed_layer_norm is not None:
            x = self.embed_layer_norm(x)
        mask = encoder_mask(input_ids, attention_mask, self.config.pad_token_id)  # (B, 1, 1, S)
        return self._run_stack(self.dropout(x), mask, output_attentions, output_hidden_states)


class TutorialPatchEmbeddings(nn.Module):
    """An image -> one vector per P x P patch: its pixels times one matrix, written as a convolution whose
    stride is its size (the patches do not overlap)."""

    def __init__(self, config: TutorialViTConfig) -> None:
        super().__init__()
        P = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=P, stride=P)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, D)


class TutorialViTModel(TutorialEncoderPreTrainedModel):
    """The Vision Transformer's embeddings and encoder: (B, C, H, W) -> (B, 1 + N, D), [CLS] first."""

    config_class = TutorialViTConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TutorialViTConfig) -> None:
        super().__init__(config)
        self.patch_embeddings = TutorialPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.embed_positions = _positions(config, config.num_patches + 1)
        self._build_stack(config)
        self.post_init()

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                **kwargs) -> BaseModelOutput:  # fmt: skip
        cfg = self.config
        want = (cfg.num_channels, cfg.image_size, cfg.image_size)
        if pixel_values is None or pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != want:
            got = None if pixel_values is None else tuple(pixel_values.shape[1:])
            raise ValueError(f"this ViT reads images of (channels, height, width) {want}, got {got}")
        patches = self.patch_embeddings(pixel_values.to(self.cls_token.dtype))
        cls = self.cls_token.expand(patches.size(0), -1, -1)
        x = torch.cat([cls, patches], dim=1)  # (B, 1 + N, D)
        x = self.embed_positions(x, position_ids=torch.arange(x.size(1), device=x.device)[None])
        return self._run_stack(self.dropout(x), None, output_attentions, output_hidden_states)  # no padding


class TutorialMaskedLMHead(nn.Module):
    """BERT's prediction head: Linear, the activation, LayerNorm, then the output layer over the vocabulary,
    whose weight is the token embedding's (tied) plus a bias of its own."""

    def __init__(self, config: TutorialBertConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.dense = nn.Linear(D, D)
        self.activation = ACTIVATIONS[config.activation]
        self.layer_norm = nn.LayerNorm(D)
        self.decoder = nn.Linear(D, config.vocab_size)  # its weight: the embedding's; its bias: its own

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V)."""
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden))))


class TutorialPooler(nn.Module):
    """One vector per sequence: [CLS]'s output (through Linear + tanh when `dense`), or the mean of the
    real tokens' outputs (`pooling="mean"`, the lecture's classifier)."""

    def __init__(self, config: TutorialEncoderConfig, pooling: str, dense: bool) -> None:
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(config.hidden_size, config.hidden_size) if dense and pooling == "cls" else None

    def forward(self, hidden: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, D), (B, S) real-token flags -> (B, D)."""
        if self.pooling == "mean":
            weights = torch.ones_like(hidden[..., :1]) if real is None else real.to(hidden.dtype)[..., None]
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # padding left out
        pooled = hidden[:, 0]
        return torch.tanh(self.dense(pooled)) if self.dense is not None else pooled


class TutorialBertForMaskedLM(TutorialEncoderPreTrainedModel):
    """The masked LM: every position's token logits (B, S, V); with `labels` (B, S), the original ids where
    a token was hidden and -100 elsewhere, the mean cross-entropy over the hidden ones."""

    config_class = TutorialBertConfig
    main_input_name = "input_ids"
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.decoder.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TutorialBertConfig) -> None:
        super().__init__(config)
        self.model = TutorialBertModel(config)
        self.lm_head = TutorialMaskedLMHead(config)
        self.post_init()  # ties lm_head.decoder to the embedding when tie_word_embeddings is set

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, logits_to_keep=0,
                **kwargs) -> MaskedLMOutput | tuple:  # fmt: skip
        """`logits_to_keep` a (B, S) boolean mask: only those positions' logits, (N, V), and no loss (a
        training step needs logits only at the hidden tokens: the head then runs on those rows alone)."""
        out = self.model(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.lm_head(kept_positions(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None and not is_row_mask(logits_to_keep):
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                attentions=out.attentions)  # fmt: skip
        return output.to_tuple() if return_dict is False else output


class _Classifier(TutorialEncoderPreTrainedModel):
    """A pooler, dropout and a Linear to the classes on top of the base model; `labels` (B,) class ids."""

    def _build_head(self, pooling: str, dense: bool) -> None:
        self.pooler = TutorialPooler(self.config, pooling, dense)
        self.classifier_dropout = nn.Dropout(self.config.dropout)
        self.classifier = nn.Linear(self.config.hidden_size, self.config.num_labels)

    def _classify(self, out, real, labels, output_class, return_dict):
        logits = self.classifier(self.classifier_dropout(self.pooler(out.last_hidden_state, real)))  # (B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        output = output_class(loss=loss, logits=logits, hidden_states=out.hidden_states,
                              attentions=out.attentions)  # fmt: skip
        return output.to_tuple() if return_dict is False else output


class TutorialBertForSequenceClassification(_Classifier):
    """BERT as a sequence classifier: (B, S) ids -> (B, C) class logits ([CLS] pooling or the mean)."""

    config_class = TutorialBertConfig
    main_input_name = "input_ids"

    def __init__(self, config: TutorialBertConfig) -> None:
        super().__init__(config)
        self.model = TutorialBertModel(config)
        self._build_head(config.pooling, dense=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None,
                **kwargs) -> SequenceClassifierOutput | tuple:  # fmt: skip
        out = self.model(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        real = attention_mask.bool() if attention_mask is not None else None
        if real is None and input_ids is not None:
            real = input_ids != self.config.pad_token_id
        return self._classify(out, real, labels, SequenceClassifierOutput, return_dict)


class TutorialViTForImageClassification(_Classifier):
    """The Vision Transformer: (B, C, H, W) images -> (B, C) class logits from [CLS]'s output."""

    config_class = TutorialViTConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TutorialViTConfig) -> None:
        super().__init__(config)
        self.model = TutorialViTModel(config)
        self._build_head("cls", dense=False)  # no pooler: the last LayerNorm's [CLS] row, as it is
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs) -> ImageClassifierOutput | tuple:  # fmt: skip
        out = self.model(pixel_values, output_attentions, output_hidden_states)
        return self._classify(out, None, labels, ImageClassifierOutput, return_dict)
