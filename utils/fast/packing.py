"""Compute on the real tokens only: a padded batch's rows packed together, for the training step.

A batch of B sentences is padded to its longest one; on the toy tasks' random batches about
38% of the (B, T) positions are <pad>. Everything in a Transformer layer except attention
itself works on each position alone (the Q/K/V/output projections, the FFN, LayerNorm,
dropout, the residual adds), so it can run on the (N, D) rows of the N real tokens and skip
the padding entirely. Attention mixes positions, so it puts its projected rows back on the
(B, T) grid (zeros where the padding was, never looked at: the padding masks hide those keys),
attends with the usual masks, and packs its output again.

Seam: the module a trainer calls for a step's labelled logits (`LabelledLogits`, told by
utils.fast.SpeedUps whether to pack). It is a twin of the readable forward that walks the model's own modules
(embeddings, projections, FFN, norms, dropouts, output layer: the same parameters) in the same
order, so the readable model code carries no trace of it. `seq2seq_view` describes either
version's model in the paper's terms. The result equals the padded computation on every real
position (tests/fast/test_fast_pieces.py); only the padding's rows, which nothing reads, are left
out. `why_not_packed` names the reason a model must take the readable path instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from utils.fast.attention import attention
from utils.fast.decoder_only import decoder_only_logits
from utils.fast.encoder_only import encoder_only_logits


class Packing:
    """Where the kept positions of a (B, T) grid are: `pack` takes their rows, `unpack` puts them back."""

    def __init__(self, keep: torch.Tensor) -> None:
        self.shape = keep.shape  # (B, T)
        self.index = keep.reshape(-1).nonzero().squeeze(1)  # (N,) row-major: sentence by sentence

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (N, D), the kept positions in row-major order (as `x[keep]`)."""
        return x.reshape(-1, x.size(-1)).index_select(0, self.index)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, T, D), zeros at the positions left out."""
        grid = rows.new_zeros(self.shape.numel(), rows.size(-1))
        return grid.index_copy(0, self.index, rows).view(*self.shape, rows.size(-1))

    def select(self, rows: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        """The rows of the positions `wanted` (B, T) selects, as `x[wanted]` selects them from the
        (B, T, D) grid. Every wanted position must be kept."""
        return rows[wanted.reshape(-1).index_select(0, self.index)]


@dataclass
class Sublayer:
    """One residual branch: an attention (self, or over the encoder's rows) or the FFN, with its norm."""

    run: nn.Module | Callable  # the attention module (q/k/v/out_proj, num_heads) or the FFN
    norm: nn.Module
    kind: str  # "self", "cross" or "ffn"


@dataclass
class Stack:
    """An encoder or decoder as the packed forward walks it."""

    embed: Callable[[torch.Tensor], torch.Tensor]  # ids (B, T) -> embeddings + positions (B, T, D)
    dropout: nn.Module  # on embeddings + positions
    layers: list[tuple[list[Sublayer], nn.Module]]  # each layer's sublayers and residual dropout
    norm: nn.Module | None  # the last LayerNorm of a pre-LN stack


@dataclass
class Seq2SeqView:
    encoder: Stack
    decoder: Stack
    lm_head: nn.Module
    norm_first: bool


def seq2seq_view(model: nn.Module) -> Seq2SeqView:
    """Either version's encoder-decoder in the paper's terms (module names as in convert.py's table)."""
    if hasattr(model, "src_embed"):  # pytorch_version.model.Transformer
        m = model
        encoder = Stack(lambda ids: m.positions(m.src_embed(ids)), m.dropout, [], m.encoder.norm)
        for layer in m.encoder.layers:
            sublayers = [Sublayer(layer.self_attn, layer.norm1, "self"),
                         Sublayer(layer.ffn, layer.norm2, "ffn")]  # fmt: skip
            encoder.layers.append((sublayers, layer.dropout))
        decoder = Stack(lambda ids: m.positions(m.tgt_embed(ids)), m.dropout, [], m.decoder.norm)
        for layer in m.decoder.layers:
            sublayers = [Sublayer(layer.self_attn, layer.norm1, "self"),
                         Sublayer(layer.cross_attn, layer.norm2, "cross"),
                         Sublayer(layer.ffn, layer.norm3, "ffn")]  # fmt: skip
            decoder.layers.append((sublayers, layer.dropout))
        return Seq2SeqView(encoder, decoder, m.lm_head, m.config.norm_first)
    enc, dec = model.model.encoder, model.model.decoder  # huggingface_version ...ForConditionalGeneration
    encoder = Stack(lambda ids: enc.embed_positions(enc.embed_tokens(ids)), enc.dropout, [], enc.layer_norm)
    for layer in enc.layers:
        sublayers = [Sublayer(layer.self_attn, layer.self_attn_layer_norm, "self"),
                     Sublayer(layer.feed_forward, layer.final_layer_norm, "ffn")]  # fmt: skip
        encoder.layers.append((sublayers, layer.dropout))
    decoder = Stack(lambda ids: dec.embed_positions(dec.embed_tokens(ids)), dec.dropout, [], dec.layer_norm)
    for layer in dec.layers:
        sublayers = [Sublayer(layer.self_attn, layer.self_attn_layer_norm, "self"),
                     Sublayer(layer.encoder_attn, layer.encoder_attn_layer_norm, "cross"),
                     Sublayer(layer.feed_forward, layer.final_layer_norm, "ffn")]  # fmt: skip
        decoder.layers.append((sublayers, layer.dropout))
    return Seq2SeqView(encoder, decoder, model.lm_head, model.config.norm_first)


def why_not_packed(model: nn.Module) -> str | None:
    """None when the packed twin computes what the readable forward would; otherwise why not.

    Anything that watches the forward wants (B, T, D) tensors from the model's own modules, and
    the twin calls only some of them: a listening capture point (utils.observe.tracing), a
    forward or backward hook on any module (the HF tracker of huggingface_version.hooks), or a
    global module hook."""
    from torch.nn.modules import module as torch_module

    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):  # fmt: skip
        if getattr(torch_module, kind, None):
            return f"a global module hook is registered ({kind})"
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return f"a forward hook listens on {name or 'the model'}"
        if module._backward_hooks or module._backward_pre_hooks:
            return f"a backward hook listens on {name or 'the model'}"
    return None


def _attend(attn: nn.Module, rows, kv_rows, q_pack: Packing, kv_pack: Packing, mask, training: bool):
    """Multi-head attention from packed query rows to packed key/value rows; returns packed rows."""
    (B, T), S, H, d_k = q_pack.shape, kv_pack.shape[1], attn.num_heads, attn.head_dim

    def heads(x, pack, length):  # (N, D) rows -> (B, H, length, d_k) on the grid, zeros at the padding
        return pack.unpack(x).view(B, length, H, d_k).transpose(1, 2)

    q = heads(attn.q_proj(rows), q_pack, T)
    k, v = heads(attn.k_proj(kv_rows), kv_pack, S), heads(attn.v_proj(kv_rows), kv_pack, S)
    p = attn.dropout.p if isinstance(attn.dropout, nn.Module) else attn.dropout  # HF keeps a float
    z = attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0)
    return attn.out_proj(q_pack.pack(z.transpose(1, 2).reshape(B, T, H * d_k)))


def _run_stack(stack: Stack, ids, pack: Packing, masks: dict, memory, norm_first: bool, training: bool):
    """Embeddings and every layer of one stack on packed rows; `memory` = (packing, rows) of the encoder."""

    def branch(sub: Sublayer, h: torch.Tensor) -> torch.Tensor:
        if sub.kind == "ffn":
            return sub.run(h)
        kv_pack, kv_rows = (pack, h) if sub.kind == "self" else memory
        return _attend(sub.run, h, kv_rows, pack, kv_pack, masks[sub.kind], training)

    x = stack.dropout(pack.pack(stack.embed(ids)))  # (N, D): embed on the grid, then the real rows
    for sublayers, dropout in stack.layers:
        for sub in sublayers:  # Add & Norm as the readable layers do it: post-LN (the paper) or pre-LN
            x = x + dropout(branch(sub, sub.norm(x))) if norm_first else sub.norm(x + dropout(branch(sub, x)))
    return stack.norm(x) if stack.norm is not None else x


class LabelledLogits(nn.Module):
    """A training step's logits where there is a label: `model(src, tgt_in)[labelled]`, (N, V).

    With `packed` (and nothing watching the model, see `why_not_packed`) computed on the real
    tokens' rows only, over `model`'s own modules; otherwise by the readable forward. A module,
    so that DistributedDataParallel can wrap it: its parameters are the model's.
    `src_keep`/`tgt_keep` say which positions are real (the HF attention masks; default: not pad).
    """

    def __init__(self, model: nn.Module, pad_id: int, packed: bool = True) -> None:
        super().__init__()
        self.model, self.pad_id, self.packed = model, pad_id, packed

    def forward(self, src, tgt_in, labelled, src_keep=None, tgt_keep=None) -> torch.Tensor:
        arch = getattr(self.model.config, "arch", "transformer")
        if arch in ("bert", "vit"):  # one stack, no target side: its own twin (encoder_only.py)
            return encoder_only_logits(
                self.model, src, labelled, self.packed and why_not_packed(self.model) is None
            )
        src_keep = src != self.pad_id if src_keep is None else src_keep.bool()
        tgt_keep = tgt_in != self.pad_id if tgt_keep is None else tgt_keep.bool()
        if not self.packed or why_not_packed(self.model) is not None:
            return readable_logits(self.model, src, tgt_in, src_keep, tgt_keep)[labelled]
        if arch == "gpt":  # its own twin: decoder_only.py
            return decoder_only_logits(self.model, src, tgt_in, labelled, src_keep, tgt_keep)
        view, training = seq2seq_view(self.model), self.model.training
        src_pack, tgt_pack = Packing(src_keep), Packing(tgt_keep | labelled)  # every labelled row computed
        T = tgt_in.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).tril()
        src_mask = src_keep[:, None, None, :]  # (B, 1, 1, S): the masks of the readable path
        tgt_mask = causal[None, None] & tgt_keep[:, None, None, :]  # (B, 1, T, T)
        memory = _run_stack(view.encoder, src, src_pack, {"self": src_mask}, None, view.norm_first, training)
        x = _run_stack(view.decoder, tgt_in, tgt_pack, {"self": tgt_mask, "cross": src_mask},
                       (src_pack, memory), view.norm_first, training)  # fmt: skip
        return view.lm_head(tgt_pack.select(x, labelled))


def readable_logits(model: nn.Module, src, tgt_in, src_keep, tgt_keep) -> torch.Tensor:
    """(B, T, V) teacher-forced logits by either version's own forward, either family."""
    if hasattr(model, "run_with_cache"):  # pytorch_version (either family): its masks come from the pad id
        return model(src, tgt_in)
    if getattr(model.config, "arch", "transformer") == "gpt":  # HF GPT: one sequence, prompt then target
        real = torch.cat([src_keep, tgt_keep], dim=1).long()
        logits = model(input_ids=torch.cat([src, tgt_in], dim=1), attention_mask=real, use_cache=False).logits
        return logits[:, src.size(1) :]
    return model(input_ids=src, attention_mask=src_keep.long(), decoder_input_ids=tgt_in,
                 decoder_attention_mask=tgt_keep.long(), use_cache=False).logits  # fmt: skip
