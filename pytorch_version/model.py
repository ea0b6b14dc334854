"""The encoder-decoder Transformer of "Attention Is All You Need", from scratch.

src tokens -> Embeddings + PE -> Encoder (N x EncoderLayer) -> memory
tgt tokens -> Embeddings + PE -> Decoder (N x DecoderLayer, attends to memory)
           -> Linear (lm_head) -> logits over the target vocabulary
"""

from __future__ import annotations

import torch
from torch import nn

from pytorch_version.attention import KVCache, causal_mask, padding_mask
from pytorch_version.layers import (
    DecoderLayer,
    Embeddings,
    EncoderLayer,
    LayerNorm,
    PositionalEncoding,
    layers_to_run,
)
from utils.observe.tracing import HookPoint, NameFilter, capture
from utils.runtime.config import ModelConfig


class TutorialModel(nn.Module):
    """What every model family of pytorch_version offers besides its forward: the parameter count,
    a KV cache for decoding, the activation cache, and the switch to the readable attention path."""

    cache_class = KVCache  # what `new_cache` builds for decoding

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once

    def new_cache(self) -> KVCache:
        """An empty cache for incremental decoding, of the class `cache_class` names (the one seam of
        decoding: docs/ARCHITECTURE.md lists what may be plugged in there)."""
        return self.cache_class()

    def run_with_cache(self, src: torch.Tensor, tgt: torch.Tensor, names: NameFilter = None, detach=True):
        """Teacher-forced forward that also returns the activation cache {name: tensor}.

        `names` filters what is kept (a glob like "*.weights", a list, or a predicate);
        see utils.observe.tracing.capture. The outputs equal those of `forward`.
        """
        with capture(self, names, detach) as cache:
            logits = self(src, tgt)
        return logits, cache

    def labelled(self, tgt_out: torch.Tensor) -> torch.Tensor:
        """Which targets carry a label (the loss counts those): all but the padding."""
        return tgt_out != self.config.pad_id

    def set_explicit_attention(self, explicit: bool = True) -> None:
        """Always take the readable attention path (True) or let each module choose (False)."""
        for module in self.modules():
            if hasattr(module, "force_explicit"):
                module.force_explicit = explicit


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))
        # pre-LN leaves the residual stream un-normalised, so one last LayerNorm closes the stack
        self.norm = LayerNorm(cfg.hidden_size) if cfg.norm_first else None
        self.layer_drop = cfg.layer_drop  # 0 unless the lab measures stochastic depth

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in layers_to_run(self.layers, self.layer_drop, self.training):
            x = layer(x, src_mask)
        return self.norm(x) if self.norm is not None else x


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = LayerNorm(cfg.hidden_size) if cfg.norm_first else None
        self.layer_drop = cfg.layer_drop

    def forward(self, x, memory, src_mask, tgt_mask, cache: KVCache | None = None):
        for layer in layers_to_run(self.layers, self.layer_drop, self.training):
            x = layer(x, memory, src_mask, tgt_mask, cache)
        return self.norm(x) if self.norm is not None else x


class Transformer(TutorialModel):
    """Encoder-decoder Transformer; `forward(src, tgt_in)` returns logits (B, T, V_tgt)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.src_embed = Embeddings(cfg.src_vocab_size, cfg.hidden_size)
        self.tgt_embed = (
            self.src_embed if cfg.share_embeddings else Embeddings(cfg.tgt_vocab_size, cfg.hidden_size)
        )
        self.positions = PositionalEncoding(cfg.hidden_size, cfg.max_position)
        self.dropout = nn.Dropout(cfg.dropout)  # on embeddings + positions (section 5.4)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.tgt_vocab_size, bias=False)  # the pre-softmax linear
        for name in ("src_embed", "src_pos", "tgt_embed", "tgt_pos", "memory", "logits"):
            self.add_module(f"hook_{name}", HookPoint())
        self.apply(self._init_weights)
        if cfg.tie_output:
            # "we share the same weight matrix between the two embedding layers and the
            # pre-softmax linear transformation" (section 3.4)
            self.lm_head.weight = self.tgt_embed.embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Xavier-uniform for every matrix, zero biases, as the Annotated Transformer does."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)

    def tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        """Look-ahead AND padding: position i sees real tokens at positions <= i."""
        return causal_mask(tgt.size(1), tgt.device) & padding_mask(tgt, self.config.pad_id)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids -> (B, S, D) memory for the decoder."""
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.hook_src_pos(self.positions(self.hook_src_embed(self.src_embed(src))))
        return self.hook_memory(self.encoder(self.dropout(x), src_mask))

    def decode(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """(B, T) target ids -> (B, T, V) logits.

        With a `cache`, `tgt` holds only the new positions; the ones before are in the cache.
        """
        start = len(cache) if cache is not None else 0
        # a decoding step's single query may see every cached key; no mask needed
        tgt_mask = self.tgt_mask(tgt) if start == 0 else None
        x = self.hook_tgt_pos(self.positions(self.hook_tgt_embed(self.tgt_embed(tgt)), start))
        x = self.decoder(self.dropout(x), memory, src_mask, tgt_mask, cache)
        return self.hook_logits(self.lm_head(x))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: `tgt` is the shifted-right target (BOS y1 y2 ...); returns (B, T, V) logits."""
        src_mask = self.src_mask(src)
        return self.decode(tgt, self.encode(src, src_mask), src_mask)
