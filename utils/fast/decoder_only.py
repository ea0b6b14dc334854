"""The GPT's training step without what its loss never reads: the decoder-only twin of `LabelledLogits`.

A decoder-only training step asks for the logits of the labelled positions only (a toy task's
completion; every position of a language model's window). The readable forward (pytorch_version/gpt.py,
huggingface_version/modeling_gpt.py) computes, for teaching, more than that:

    q, k, v           three projections of the same rows: here one matrix product with the three
                      weights stacked (the gradient flows back to each of them)
    positions         a (B, T) id per token and a gather of the rotary angles per layer, so that padded
                      prompts number their own tokens: without padding position m of every row is m, and
                      the angle tables are sliced once
    masks             without padding the look-ahead mask alone: the fused kernel applies it itself
    capture points    nothing listens (`packing.why_not_packed` checks before this runs)
    output layer      on the labelled rows only, (N, D) -> (N, V): the prompt's rows have no label

Seam: the module a trainer calls for a step's labelled logits (`packing.LabelledLogits`), for a model
whose `config.arch` is "gpt". It walks the model's own modules, so the parameters and the math are the
readable model's; tests/fast/test_decoder_only.py holds the two equal, values and gradients;
benchmarks/speed_pieces.py measures what it buys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from utils.fast.attention import attention


@dataclass
class Block:
    attn: nn.Module  # q_proj, k_proj, v_proj, out_proj, num_heads, head_dim, dropout
    norm1: nn.Module
    ffn: Callable[[torch.Tensor], torch.Tensor]  # fc2(activation(fc1(x))), without capture points
    norm2: nn.Module
    dropout: nn.Module  # residual dropout


@dataclass
class DecoderOnlyView:
    embed: Callable  # (ids (B, T), position ids (B, T) or None: 0..T-1) -> (B, T, D), positions added
    rotary: tuple[torch.Tensor, torch.Tensor] | None  # the (P, d) cos and sin tables
    dropout: nn.Module  # on the embeddings
    blocks: list[Block]
    norm: nn.Module | None  # the last LayerNorm of a pre-LN stack
    lm_head: nn.Module
    norm_first: bool


def _added(positions: nn.Module | None, table: Callable[[nn.Module], torch.Tensor]):
    """x -> x + the position rows of `positions` (a learned or fixed table), or x when rotary."""
    if positions is None:
        return lambda x, ids: x
    return lambda x, ids: x + (table(positions)[: x.size(1)] if ids is None else table(positions)[ids])


def _table(module: nn.Module) -> torch.Tensor:
    return module.embedding.weight if hasattr(module, "embedding") else module.table


def decoder_only_view(model: nn.Module) -> DecoderOnlyView:
    """Either version's GPT in the paper's terms (module names as in convert.py's GPT key table)."""
    if hasattr(model, "forward_tokens"):  # pytorch_version.gpt.GPT
        m = model
        add = _added(m.positions, _table)
        embed = lambda ids, pos: add(m.tgt_embed(ids), pos)
        rotary = m.decoder.layers[0].self_attn.rotary
        blocks = [Block(layer.self_attn, layer.norm1, lambda x, f=layer.ffn: f.fc2(f.activation(f.fc1(x))),
                        layer.norm2, layer.dropout) for layer in m.decoder.layers]  # fmt: skip
        return DecoderOnlyView(embed, None if rotary is None else (rotary.cos, rotary.sin), m.dropout, blocks,
                               m.decoder.norm, m.lm_head, m.config.norm_first)  # fmt: skip
    inner = model.model  # huggingface_version TutorialGPTForCausalLM
    add = _added(inner.embed_positions, lambda p: p.weight if hasattr(p, "weight") else _table(p))
    embed = lambda ids, pos: add(inner.embed_tokens(ids), pos)
    rotary = inner.rotary_emb
    blocks = [Block(layer.self_attn, layer.self_attn_layer_norm, layer.feed_forward, layer.final_layer_norm,
                    layer.dropout) for layer in inner.layers]  # fmt: skip
    return DecoderOnlyView(embed, None if rotary is None else (rotary.cos, rotary.sin), inner.dropout, blocks,
                           inner.layer_norm, model.lm_head, model.config.norm_first)  # fmt: skip


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _attend(attn: nn.Module, h: torch.Tensor, angles, mask, training: bool) -> torch.Tensor:
    """Causal multi-head self-attention of (B, T, D) rows, q, k and v from one matrix product."""
    B, T, D = h.shape
    H, d = attn.num_heads, attn.head_dim
    weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])  # (3D, D)
    bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    q, k, v = F.linear(h, weight, bias).view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d)
    if angles is not None:
        q, k = _rotate(q, *angles), _rotate(k, *angles)
    p = attn.dropout.p if isinstance(attn.dropout, nn.Module) else attn.dropout  # HF keeps a float
    z = attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0, is_causal=mask is None)
    return attn.out_proj(z.transpose(1, 2).reshape(B, T, D))


def decoder_only_logits(model: nn.Module, src, tgt_in, labelled, src_keep, tgt_keep) -> torch.Tensor:
    """(N, V) logits of the labelled positions of tgt_in, the prompt `src` (may be empty) before it."""
    view, training = decoder_only_view(model), model.training
    tokens, real = torch.cat([src, tgt_in], dim=1), torch.cat([src_keep, tgt_keep], dim=1)
    wanted = torch.cat([torch.zeros_like(src_keep), labelled], dim=1)  # (B, S + T): rows with a label
    T = tokens.size(1)
    if bool(real.all()):  # no padding: position m is m in every row, and the look-ahead mask is the mask
        positions, mask = None, None
        angles = None if view.rotary is None else tuple(t[:T] for t in view.rotary)  # (T, d)
    else:  # as the readable forward: each row numbers its tokens, no query sees a pad, each sees itself
        positions = (real.long().cumsum(1) - 1).clamp(min=0)
        look_ahead = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
        mask = (look_ahead & real[:, None, None, :]) | torch.eye(T, dtype=torch.bool, device=tokens.device)
        angles = None if view.rotary is None else tuple(t[positions][:, None] for t in view.rotary)
    x = view.dropout(view.embed(tokens, positions))
    for b in view.blocks:
        attend = lambda h, b=b: _attend(b.attn, h, angles, mask, training)
        for sublayer, norm in ((attend, b.norm1), (b.ffn, b.norm2)):
            x = x + b.dropout(sublayer(norm(x))) if view.norm_first else norm(x + b.dropout(sublayer(x)))
    if view.norm is not None:
        x = view.norm(x)
    return view.lm_head(x[wanted])
