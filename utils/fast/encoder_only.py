"""The encoder-only training step's twin: BERT's masked LM computes its last layer at the masked rows only.

The masked LM is scored at the ~15% of positions that were chosen (utils/data/masking.py), and
nothing after the last layer's attention mixes positions: the last layer's query projection, the
output projection, both Add & Norms, the FFN, the final LayerNorm and the prediction head (a D x D
Linear, GELU, LayerNorm and the D x V output layer) change a chosen position's vector only from that
position's own. So the twin runs every layer but the last as the readable forward does, and the last
one with queries at the chosen rows alone (keys and values still from every position), then the
head on those rows: the same numbers at the chosen positions, and for a 2-layer model close to half
of the work (benchmarks/encoder_speed.py). A classifier reads one vector per sequence from every
position's last output (a mean) or from [CLS], so its step is the readable forward.
tests/fast/test_encoder_only.py holds the twin equal in values and gradients, post-LN and pre-LN,
with padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def encoder_only_logits(
    model, src: torch.Tensor, labelled: torch.Tensor, packed: bool = True
) -> torch.Tensor:
    """(N, V) masked-LM logits at the `labelled` positions, or (B, C) class logits, of either version's
    model (huggingface_version's by its readable forward)."""
    if hasattr(model, "run_with_cache"):  # pytorch_version
        if not packed or model.config.num_labels:
            return model(src)[labelled]
        return model.head(_masked_rows(model, src, labelled))
    if src.dtype.is_floating_point:  # an HF image classifier
        return model(pixel_values=src).logits[labelled]
    real = (src != model.config.pad_token_id).long()
    return model(input_ids=src, attention_mask=real).logits[labelled]


def _masked_rows(bert, src: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """BERT's encoder output (N, D) at the labelled positions, in row-major order (as `x[labelled]`)."""
    x = bert.positions(bert.src_embed(src))  # BERT.encode, step by step
    if bert.embed_norm is not None:
        x = bert.embed_norm(x)
    x, mask = bert.dropout(x), bert.src_mask(src)
    *first, last = bert.encoder.layers
    for layer in first:
        x = layer(x, mask)
    rows = _last_layer_at(last, x, mask, labelled)
    return bert.encoder.norm(rows) if bert.encoder.norm is not None else rows


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
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, M, d_k)
    attended = attn.out_proj(z.transpose(1, 2).reshape(B, M, D)[rows[0], slot[rows]])  # (N, D)
    y = x[rows]
    if layer.norm_first:  # the two Add & Norms of add_and_norm, at these rows
        y = y + layer.dropout(attended)
        return y + layer.dropout(layer.ffn(layer.norm2(y)))
    y = layer.norm1(y + layer.dropout(attended))
    return layer.norm2(y + layer.dropout(layer.ffn(y)))
