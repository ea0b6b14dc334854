"""Encoder-only Transformers from the paper's boxes: BERT for text, the Vision Transformer for images.

    BERT   ids ([CLS] text [SEP]) -> Embeddings + learned positions -> LayerNorm -> Encoder
           -> masked-LM head (a token at every position; the output tied to the embedding)
           or a classifier ([CLS]'s output through a tanh pooler, or the mean of every real token)
    ViT    image -> patches (each P x P square a token) + [CLS] + learned positions -> Encoder
           (pre-LN) -> LayerNorm -> a classifier on [CLS]'s output

What they drop from the encoder-decoder: the decoder, and with it the look-ahead mask: every token
sees every other (padding aside), so a token's vector is built from both sides of it. They cannot
generate text left to right; they read. BERT learns to read by guessing the tokens hidden behind
[MASK] (Devlin et al. 2019, utils/data/masking.py); ViT reads an image as a sentence of patches
(Dosovitskiy et al. 2021).

The interface is the other families': `forward(src, tgt_in=None)` gives the logits (tgt_in is
unused: there is no target side), (B, S, V) of the masked LM or (B, C) of a classifier;
`encode(src)` the encoder's output, which the cache calls `memory`; the cache names are
`encoder.{i}.*`, as for the encoder of the paper's model.
"""

from __future__ import annotations

import torch
from torch import nn

from pytorch_version.attention import padding_mask
from pytorch_version.layers import ACTIVATIONS, Embeddings, LayerNorm
from pytorch_version.model import Encoder, TutorialModel
from pytorch_version.positions import LearnedPositions, PositionalEncoding
from utils.observe.tracing import HookPoint
from utils.runtime.config import ModelConfig


def _positions(cfg: ModelConfig, count: int) -> nn.Module:
    return (
        LearnedPositions(cfg.hidden_size, count)
        if cfg.positions == "learned"
        else PositionalEncoding(cfg.hidden_size, count)
    )


class MaskedLMHead(nn.Module):
    """BERT's prediction head: Linear, GELU, LayerNorm, then the output layer over the vocabulary,
    whose weight is the token embedding's (section 3.4 of the paper ties them too) plus a bias."""

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.dense = nn.Linear(D, D)
        self.activation = ACTIVATIONS[cfg.activation]
        self.norm = LayerNorm(D)
        self.output = nn.Linear(D, cfg.vocab_size)
        if cfg.tie_output:
            self.output.weight = embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V): the hidden rows of the masked positions (or all) to token logits."""
        return self.output(self.norm(self.activation(self.dense(hidden))))


class ClassifierHead(nn.Module):
    """One vector per sequence, then a Linear to the classes.

    cls:  [CLS]'s output through BERT's pooler (Linear + tanh): the token that belongs to no word
          of the input, so attention is free to gather the whole input into it
    mean: the mean of the real tokens' outputs (the lecture's TransformerClassifier)
    """

    def __init__(self, cfg: ModelConfig, pooling: str, pooler: bool = True) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.pooling = pooling
        self.pooler = nn.Linear(D, D) if pooling == "cls" and pooler else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(D, cfg.num_labels)
        self.hook_pooled = HookPoint()  # (B, D): the sequence's one vector

    def forward(self, hidden: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, D) encoder output, (B, S) real-token flags -> (B, C) class logits."""
        if self.pooling == "mean":
            weights = (
                real.to(hidden.dtype)[..., None] if real is not None else torch.ones_like(hidden[..., :1])
            )
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # padding left out
        else:
            pooled = hidden[:, 0]
            if self.pooler is not None:
                pooled = torch.tanh(self.pooler(pooled))
        return self.classifier(self.dropout(self.hook_pooled(pooled)))


class EncoderOnlyModel(TutorialModel):
    """What BERT and ViT share: the stack, the init, a classifier's targets, the interface."""

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's and ViT's N(0, 0.02) ("normal"), or Xavier-uniform; zero biases either way."""
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            if self.config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def labelled(self, tgt_out: torch.Tensor) -> torch.Tensor:
        """A classifier's every target is a class; the masked LM's padding marks unmasked tokens."""
        if self.config.num_labels:
            return torch.ones_like(tgt_out, dtype=torch.bool)
        return super().labelled(tgt_out)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) ids or (B, C, H, W) images -> the head's logits; `tgt_in` is not read (no decoder)."""
        return self.hook_logits(self.head_logits(self.encode(src), src))


class BERT(EncoderOnlyModel):
    """An encoder over text with a masked-LM head (no labels) or a sequence classifier (labels)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.hidden_size
        self.src_embed = Embeddings(cfg.vocab_size, D, scale=False)  # BERT adds unscaled embeddings
        self.positions = _positions(cfg, cfg.max_position)
        self.embed_norm = LayerNorm(D) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        if cfg.num_labels:
            self.head = ClassifierHead(cfg, cfg.pooling)
        else:
            self.head = MaskedLMHead(cfg, self.src_embed.embedding)
        for name in ("src_embed", "src_pos", "memory", "logits"):
            self.add_module(f"hook_{name}", HookPoint())
        self.apply(self._init_weights)

    def src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return padding_mask(src, self.config.pad_id)  # (B, 1, 1, S): no token looks at a pad

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) ids -> (B, S, D): every token's vector, read in the light of the whole input."""
        x = self.hook_src_pos(self.positions(self.hook_src_embed(self.src_embed(src))))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        mask = self.src_mask(src) if src_mask is None else src_mask
        return self.hook_memory(self.encoder(self.dropout(x), mask))

    def head_logits(self, hidden: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        if self.config.num_labels:
            return self.head(hidden, src != self.config.pad_id)  # (B, C)
        return self.head(hidden)  # (B, S, V)


class PatchEmbedding(nn.Module):
    """An image -> one vector per P x P patch: each patch's pixels, flattened, times one matrix,
    written as a convolution whose stride is its size (so the patches do not overlap)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        P = cfg.patch_size
        self.projection = nn.Conv2d(cfg.channels, cfg.hidden_size, kernel_size=P, stride=P)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), the patches row by row."""
        return self.projection(images).flatten(2).transpose(1, 2)


class ViT(EncoderOnlyModel):
    """The Vision Transformer: patches as tokens, a learned [CLS] vector first, a classifier on it."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.hidden_size
        self.patch_embed = PatchEmbedding(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))  # the [CLS] "token" is a vector, not an id
        self.positions = _positions(cfg, cfg.num_patches + 1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)  # pre-LN by default: its last LayerNorm closes the stack
        self.head = ClassifierHead(cfg, "cls", pooler=False)
        for name in ("src_embed", "src_pos", "memory", "logits"):
            self.add_module(f"hook_{name}", HookPoint())
        self.apply(self._init_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    def src_mask(self, src: torch.Tensor) -> None:
        return None  # every patch is real

    def check_images(self, images: torch.Tensor) -> None:
        cfg = self.config
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"this ViT reads images of (channels, height, width) {want}, got "
                             f"{tuple(images.shape[1:])}")  # fmt: skip

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) images -> (B, 1 + N, D): [CLS] then the patches."""
        self.check_images(src)
        patches = self.patch_embed(src)
        x = torch.cat([self.cls_token.expand(src.size(0), -1, -1).to(patches.dtype), patches], dim=1)
        x = self.hook_src_pos(self.positions(self.hook_src_embed(x)))
        return self.hook_memory(self.encoder(self.dropout(x), None))

    def head_logits(self, hidden: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)  # (B, C), from [CLS]
