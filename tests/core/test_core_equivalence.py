"""pytorch_version against code nobody here wrote: torch.nn's own Transformer layers.

Our weights are copied into nn.TransformerEncoder / nn.TransformerDecoder (same post-LN or
pre-LN arrangement, ReLU, no dropout) and both are fed the same inputs and masks. Where the two
conventions differ (what a padded query position holds), only real positions are compared.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_version.attention import MultiHeadAttention, causal_mask, padding_mask
from pytorch_version.layers import PositionalEncoding
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.observe.tracing import capture

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
PAD = 0


def _model(norm_first: bool) -> Transformer:
    """A tiny model whose every parameter is random, so a swapped weight or bias cannot hide."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(norm_first=norm_first)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases start at zero and LayerNorm at (1, 0)
    return model


def _copy_attention(ref: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    ref.out_proj.load_state_dict(ours.out_proj.state_dict())


def _copy_common(ref, ours) -> None:
    ref.linear1.load_state_dict(ours.ffn.fc1.state_dict())
    ref.linear2.load_state_dict(ours.ffn.fc2.state_dict())
    for name in ("norm1", "norm2", "norm3"):
        if hasattr(ref, name):
            getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())


def _final_norm(stack) -> nn.LayerNorm | None:
    """Our pre-LN stacks end with a LayerNorm; the post-LN ones (the paper's) have none."""
    if stack.norm is None:
        return None
    norm = nn.LayerNorm(stack.norm.normalized_shape)
    norm.load_state_dict(stack.norm.state_dict())
    return norm


def _layer_kwargs(model: Transformer) -> dict:
    cfg = model.config
    return dict(d_model=cfg.hidden_size, nhead=cfg.num_heads, dim_feedforward=cfg.ffn_size, dropout=0.0,
                activation="relu", batch_first=True, norm_first=cfg.norm_first)  # fmt: skip


@torch.no_grad()
def torch_encoder(model: Transformer) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(**_layer_kwargs(model))
    ref = nn.TransformerEncoder(
        layer, model.config.num_layers, norm=_final_norm(model.encoder), enable_nested_tensor=False
    )
    for ref_layer, ours in zip(ref.layers, model.encoder.layers, strict=True):
        _copy_attention(ref_layer.self_attn, ours.self_attn)
        _copy_common(ref_layer, ours)
    return ref.eval()


@torch.no_grad()
def torch_decoder(model: Transformer) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(**_layer_kwargs(model))
    ref = nn.TransformerDecoder(layer, model.config.num_layers, norm=_final_norm(model.decoder))
    for ref_layer, ours in zip(ref.layers, model.decoder.layers, strict=True):
        _copy_attention(ref_layer.self_attn, ours.self_attn)
        _copy_attention(ref_layer.multihead_attn, ours.cross_attn)
        _copy_common(ref_layer, ours)
    return ref.eval()


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Sources with 0, 2 and 4 trailing pads; BOS-led targets with 0, 1 and 3 trailing pads."""
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, 30, (3, 8), generator=g)
    src[1, 6:] = PAD
    src[2, 4:] = PAD
    tgt = torch.randint(4, 30, (3, 7), generator=g)
    tgt[:, 0] = 1
    tgt[1, 6:] = PAD
    tgt[2, 4:] = PAD
    return src, tgt


def _nn_causal(size: int) -> torch.Tensor:
    """nn.Transformer's boolean attn_mask: True means *not* allowed (ours: True means allowed)."""
    return torch.ones(size, size, dtype=torch.bool).triu(diagonal=1)


def _sinusoids(length: int, d_model: int) -> torch.Tensor:
    """Section 3.5 written out: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    table = torch.zeros(length, d_model, dtype=torch.float64)
    for pos in range(length):
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            table[pos, i], table[pos, i + 1] = math.sin(angle), math.cos(angle)
    return table.float()


NORM_FIRST = pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])


@NORM_FIRST
def test_encoder_stack_matches_torch_transformer_encoder(norm_first):
    model = _model(norm_first)
    src, _ = _tokens()
    x = torch.randn(*src.shape, model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    real = src != PAD

    ours = model.encoder(x, padding_mask(src, PAD))
    ref = torch_encoder(model)(x, src_key_padding_mask=~real)

    torch.testing.assert_close(ours[real], ref[real], atol=ATOL, rtol=0)


@NORM_FIRST
def test_decoder_stack_matches_torch_transformer_decoder(norm_first):
    model = _model(norm_first)
    src, tgt = _tokens()
    g = torch.Generator().manual_seed(5)
    D = model.config.hidden_size
    x, memory = torch.randn(*tgt.shape, D, generator=g), torch.randn(*src.shape, D, generator=g)
    real = tgt != PAD

    ours = model.decoder(x, memory, model.src_mask(src), model.tgt_mask(tgt))
    ref = torch_decoder(model)(
        x,
        memory,
        tgt_mask=_nn_causal(tgt.size(1)),
        tgt_key_padding_mask=tgt == PAD,
        memory_key_padding_mask=src == PAD,
    )

    torch.testing.assert_close(ours[real], ref[real], atol=ATOL, rtol=0)


@NORM_FIRST
def test_whole_model_logits_match_embeddings_then_torch_stacks(norm_first):
    model = _model(norm_first)
    src, tgt = _tokens()
    D = model.config.hidden_size

    def embed(tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, weight) * math.sqrt(D) + _sinusoids(tokens.size(1), D)

    memory = torch_encoder(model)(
        embed(src, model.src_embed.embedding.weight), src_key_padding_mask=src == PAD
    )
    hidden = torch_decoder(model)(
        embed(tgt, model.tgt_embed.embedding.weight),
        memory,
        tgt_mask=_nn_causal(tgt.size(1)),
        tgt_key_padding_mask=tgt == PAD,
        memory_key_padding_mask=src == PAD,
    )
    # tie_output (section 3.4): the pre-softmax linear is the target embedding matrix
    ref_logits = F.linear(hidden, model.tgt_embed.embedding.weight)

    real = tgt != PAD
    torch.testing.assert_close(model(src, tgt)[real], ref_logits[real], atol=ATOL, rtol=0)


def test_output_projection_is_tied_to_target_embedding():
    model = _model(norm_first=False)
    assert model.lm_head.weight is model.tgt_embed.embedding.weight
    untied = Transformer(tiny_config(tie_output=False))
    assert untied.lm_head.weight is not untied.tgt_embed.embedding.weight


def test_positional_encoding_is_the_papers_sinusoid_table():
    pe = PositionalEncoding(32, max_position=64)
    x = torch.zeros(2, 64, 32)
    torch.testing.assert_close(pe(x), _sinusoids(64, 32).expand(2, -1, -1), atol=1e-5, rtol=0)
    # `start` shifts the table: decoding step t adds the row of position t
    torch.testing.assert_close(pe(x[:, :3], start=10)[0], _sinusoids(13, 32)[10:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="max_position=64"):
        pe(torch.zeros(1, 65, 32))


def test_multi_head_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, 4).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        _copy_attention(ref, ours)
    g = torch.Generator().manual_seed(6)
    query, key_value = torch.randn(2, 5, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 4:] = False

    expected, expected_weights = ref(query, key_value, key_value, key_padding_mask=~keep)
    with capture(ours, "weights") as cache:
        out = ours(query, key_value, keep[:, None, None, :])
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    # nn.MultiheadAttention returns the weights averaged over the heads
    torch.testing.assert_close(cache["weights"].mean(dim=1), expected_weights, atol=ATOL, rtol=0)

    # the same with a causal mask on self-attention, through the explicit path too
    x = query
    allowed = causal_mask(5)
    ref_causal, _ = ref(x, x, x, attn_mask=_nn_causal(5))
    for explicit in (False, True):
        ours.force_explicit = explicit
        torch.testing.assert_close(ours(x, x, allowed), ref_causal, atol=ATOL, rtol=0)
