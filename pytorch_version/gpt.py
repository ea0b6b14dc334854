"""A decoder-only Transformer (GPT) from the paper's boxes: one stack, masked self-attention only.

tokens -> Embeddings (+ learned or sinusoidal positions; rotary ones turn q and k instead)
       -> decoder (N x GPTBlock: masked self-attention, FFN, pre-LN) -> LayerNorm
       -> Linear (lm_head, tied to the embedding) -> logits for the next token at every position

What it drops from the encoder-decoder: the encoder and the cross-attention. A prompt is not
encoded apart: it is the beginning of the one sequence the stack reads, and the look-ahead mask
lets every position see only what comes before it, so the same model scores a text (training) and
continues it (generation). A toy task becomes prompt then completion, `hello<s>olleh</s>`, with the
loss on the completion only.

The interface is the encoder-decoder's, so training, decoding, tracing and evaluation serve both:
`forward(src, tgt_in)` gives the logits of the `tgt_in` positions with `src` as the prompt before
them (a language model's batches have an empty `src`); `encode` returns the prompt itself (there is
no encoder) and `decode(tgt, prompt, prompt_mask, cache)` runs the stack, over the prompt too while
the cache is empty. `forward_tokens(tokens, cache)` is the plain language model.

Padding: prompts of different lengths are padded, so pads may sit between the prompt and the
completion. Each row numbers its real tokens 0, 1, 2, ... (`position_ids`) and no query looks at a
pad, so a row's logits do not depend on what it was batched with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pytorch_version.attention import KVCache, MultiHeadAttention, padding_mask
from pytorch_version.layers import Embeddings, FeedForward, LayerNorm, add_and_norm, layers_to_run
from pytorch_version.model import TutorialModel
from pytorch_version.positions import LearnedPositions, PositionalEncoding, RotaryEmbedding
from utils.observe.tracing import HookPoint
from utils.runtime.config import ModelConfig


def position_ids(real: torch.Tensor, past: int | torch.Tensor = 0) -> torch.Tensor:
    """(B, T) real-token flags -> each token's position among its row's real tokens, after `past`
    ((B,) or int) real tokens already read. Pads get the position of the token before them."""
    return (torch.as_tensor(past, device=real.device).reshape(-1, 1) + real.long().cumsum(1) - 1).clamp(min=0)


class GPTBlock(nn.Module):
    """Masked self-attention, then the FFN, each in Add & Norm: the decoder layer without cross-attention
    (equivalently, the encoder layer with the look-ahead mask)."""

    def __init__(self, cfg: ModelConfig, index: int, rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.self_attn = MultiHeadAttention(D, cfg.num_heads, cfg.attention_dropout, rotary)
        self.ffn = FeedForward(D, cfg.ffn_size, cfg.activation, cfg.ffn_gate)
        self.norm1 = LayerNorm(D)
        self.norm2 = LayerNorm(D)
        self.dropout = nn.Dropout(cfg.dropout)  # residual dropout
        self.norm_first, self.residual = cfg.norm_first, cfg.residual
        self.index = index  # names this layer's entries in a KVCache
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, mask, positions, cache: KVCache | None = None, causal: bool = False):
        """(B, T, D) -> (B, T, D); with a `cache`, `x` holds only the new positions."""
        x = self.hook_resid_pre(x)
        attend = lambda h: self.self_attn(h, h, mask, cache, f"{self.index}.self", positions=positions,
                                          causal=causal)  # fmt: skip
        x = self.hook_resid_mid(add_and_norm(x, attend, self.norm1, self.dropout, *self.wiring))
        return self.hook_resid_post(add_and_norm(x, self.ffn, self.norm2, self.dropout, *self.wiring))

    @property
    def wiring(self) -> tuple[bool, bool]:
        """add_and_norm's last two settings: where the LayerNorm sits, whether the "x +" is there."""
        return self.norm_first, self.residual


class DecoderOnly(nn.Module):
    """The stack: N blocks and, pre-LN, one last LayerNorm (GPT-2's ln_f)."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GPTBlock(cfg, i, rotary) for i in range(cfg.num_layers))
        self.norm = LayerNorm(cfg.hidden_size) if cfg.norm_first else None
        self.layer_drop = cfg.layer_drop

    def forward(self, x, mask, positions, cache=None, causal=False):
        for layer in layers_to_run(self.layers, self.layer_drop, self.training):
            x = layer(x, mask, positions, cache, causal)
        return self.norm(x) if self.norm is not None else x


class GPT(TutorialModel):
    """Decoder-only Transformer; `forward(src, tgt_in)` gives the logits (B, T, V) at `tgt_in`'s positions."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        D, P = cfg.hidden_size, cfg.max_position
        self.tgt_embed = Embeddings(cfg.vocab_size, D, scale=False)  # GPT-2 adds unscaled embeddings
        rotary = RotaryEmbedding(cfg.head_dim, P) if cfg.positions == "rotary" else None
        if cfg.positions == "learned":
            self.positions = LearnedPositions(D, P)
        elif cfg.positions == "sinusoidal":
            self.positions = PositionalEncoding(D, P)
        else:
            self.positions = None  # rotary: the attention modules turn q and k
        self.dropout = nn.Dropout(cfg.dropout)  # on the embeddings
        self.decoder = DecoderOnly(cfg, rotary)
        self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        for name in ("tgt_embed", "tgt_pos", "logits"):
            self.add_module(f"hook_{name}", HookPoint())
        self.apply(self._init_weights)
        if cfg.init == "gpt2":  # the projections into the residual stream: 1/sqrt(2 N) smaller
            for layer in self.decoder.layers:
                for linear in (layer.self_attn.out_proj, layer.ffn.fc2):
                    nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * cfg.num_layers))
        if cfg.tie_output:  # the output layer reads the embedding matrix (section 3.4; GPT-2 too)
            self.lm_head.weight = self.tgt_embed.embedding.weight

    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-uniform, or GPT-2's N(0, 0.02); zero biases either way."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if self.config.init == "gpt2":
                nn.init.normal_(module.weight, std=0.02)
            else:
                nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward_tokens(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits of the next token at each position; with a `cache`, the
        positions before `tokens` are read from it and these are added to it."""
        real = tokens != self.config.pad_id
        past = cache.padding if cache is not None and cache.padding is not None else None
        keys = real if past is None else torch.cat([past, real], dim=1)  # (B, S): which keys are tokens
        positions = position_ids(real, 0 if past is None else past.sum(1))
        if cache is not None:
            cache.padding = keys
        T, S = tokens.size(1), keys.size(1)
        if bool(keys.all()):
            mask, causal = None, T > 1  # no padding: the look-ahead mask alone (one new token sees all)
        else:  # look-ahead AND no pads; each position also sees itself, so a pad's row stays finite
            look_ahead = torch.ones(T, S, dtype=torch.bool, device=tokens.device).tril(S - T)
            itself = torch.eye(T, S, dtype=torch.bool, device=tokens.device).roll(S - T, dims=1)
            mask, causal = (look_ahead & keys[:, None, None, :]) | itself, False  # (B, 1, T, S)
        x = self.hook_tgt_embed(self.tgt_embed(tokens))
        if self.positions is not None:
            x = self.positions(x, positions=positions)
        x = self.hook_tgt_pos(x)
        x = self.decoder(self.dropout(x), mask, positions, cache, causal)
        return self.hook_logits(self.lm_head(x))

    # the encoder-decoder's interface (pytorch_version.decoding, training, tracing use it)

    def src_mask(self, src: torch.Tensor) -> torch.Tensor:
        return padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """No encoder: the prompt is read by the same stack, as the first part of the sequence."""
        return src

    def decode(self, tgt: torch.Tensor, prompt: torch.Tensor, prompt_mask=None, cache: KVCache | None = None):
        """(B, T) ids after the (B, S) `prompt` -> (B, T, V) logits; once the cache holds the prompt,
        `tgt` holds only the new positions."""
        if cache is not None and len(cache) > 0:
            return self.forward_tokens(tgt, cache)
        logits = self.forward_tokens(torch.cat([prompt, tgt], dim=1), cache)
        return logits[:, prompt.size(1) :]

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the logits (B, T, V) at `tgt`'s positions (prompt `src` first, may be empty)."""
        return self.decode(tgt, src)
