"""The encoder-only training step's twin: the last layer computed only where the loss reads it.

BERT's masked LM is scored at the ~15% of positions that were chosen (utils/data/masking.py); a
[CLS] classifier (a ViT, a BERT with --pooling cls) reads position 0 alone. Nothing after the last
layer's attention mixes positions: the last layer's query projection, the output projection, both
Add & Norms, the FFN, the final LayerNorm and the head change a position's vector only from that
position's own. So the twin runs every layer but the last as the readable forward does, and the last
one with queries at the wanted rows alone (keys and values still from every position), then the
head on those rows: the same numbers there, and for a 2-layer model close to half of the work
(benchmarks/encoder_speed.py). A mean-pooling classifier reads every position, so its step is the
readable forward. tests/fast/test_encoder_only.py holds the twin equal in values and gradients,
post-LN and pre-LN, with padding.
"""

from __future__ import annotations

import torch

from utils.fast.attention import attention


def encoder_only_logits(
    model, src: torch.Tensor, labelled: torch.Tensor, packed: bool = True
) -> torch.Tensor:
    """(N, V) masked-LM logits at the `labelled` positions, or (B, C) class logits, of either version's
    model (huggingface_version's by its readable forward)."""
    if hasattr(model, "run_with_cache"):  # pytorch_version
        if not packed or (model.config.num_labels and model.head.pooling != "cls"):
            return model(src)[labelled]
        if model.config.num_labels:  # [CLS]'s row of every sequence, (B, 1, D): what the head reads
            return model.head(_encoded_at(model, src, at_cls=True)[:, None])[labelled]
        return model.head(_encoded_at(model, src, labelled))
    if src.dtype.is_floating_point:  # an HF image classifier
        return model(pixel_values=src).logits[labelled]
    real = (src != model.config.pad_token_id).long()
    return model(input_ids=src, attention_mask=real).logits[labelled]


def _embedded(model, src: torch.Tensor) -> torch.Tensor:
    """What the encoder stack reads: BERT.encode's or ViT.encode's steps before it."""
    if hasattr(model, "patch_embed"):  # ViT: the patches after a [CLS] vector
        model.check_images(src)
        patches = model.patch_embed(src)
        x = torch.cat([model.cls_token.expand(src.size(0), -1, -1).to(patches.dtype), patches], dim=1)
        return model.dropout(model.positions(x))
    x = model.positions(model.src_embed(src))
    return model.dropout(model.embed_norm(x) if model.embed_norm is not None else x)


def _encoded_at(model, src: torch.Tensor, labelled: torch.Tensor | None = None, at_cls: bool = False):
    """The encoder's output (N, D) at the labelled positions (row-major, as `x[labelled]`), or at
    [CLS] (position 0) of every row."""
    x, mask = _embedded(model, src), model.src_mask(src)
    if at_cls:
        labelled = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        labelled[:, 0] = True
    *first, last = model.encoder.layers
    for layer in first:
        x = layer(x, mask)
    rows = _last_layer_at(last, x, mask, labelled)
    return model.encoder.norm(rows) if model.encoder.norm is not None else rows


def _last_layer_at(layer, x: torch.Tensor, mask: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """An EncoderLayer's output at the labelled positions: their queries attend to every key."""
    attn, B, S, D = layer.self_attn, *x.shape
    H, d_k = attn.num_heads, attn.head_dim
    h = layer.norm1(x) if layer.norm_first else x  # what the attention reads
    k = attn.k_proj(h).view(B, S, H, d_k).transpose(1, 2)
    v = attn.v_proj(h).view(B, S, H, d_k).transpose(1, 2)
    # the labelled rows' queries, put on a (B, M) grid: M the most any row has, the rest left empty
    slot = labelled.long().cumsum(1) - 1  # each labelled position's place among its row's
    M = max(int(labelled.sum(1).max()), 1)
    rows = labelled.nonzero(as_tuple=True)
    grid = h.new_zeros(B, M, D)
    grid[rows[0], slot[rows]] = h[rows]
    q = attn.q_proj(grid).view(B, M, H, d_k).transpose(1, 2)
    p = attn.dropout.p if attn.training else 0.0
    z = attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, M, d_k)
    attended = attn.out_proj(z.transpose(1, 2).reshape(B, M, D)[rows[0], slot[rows]])  # (N, D)
    y = x[rows]
    if layer.norm_first:  # the two Add & Norms of add_and_norm, at these rows
        y = y + layer.dropout(attended)
        return y + layer.dropout(layer.ffn(layer.norm2(y)))
    y = layer.norm1(y + layer.dropout(attended))
    return layer.norm2(y + layer.dropout(layer.ffn(y)))
