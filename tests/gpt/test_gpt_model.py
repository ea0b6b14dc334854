"""The decoder-only GPT (pytorch_version/gpt.py): against code no one here wrote, and its own promises.

- with learned positions, GELU and pre-LN it is GPT-2: weights copied into transformers'
  GPT2LMHeadModel give the same logits;
- its rotary embedding turns q and k exactly as transformers' Llama functions do;
- causality, padding independence, cached = uncached decoding, the explicit = the fused path.
"""

from __future__ import annotations

import pytest
import torch

from pytorch_version.decoding import beam_search, greedy_decode
from pytorch_version.families import model_for
from pytorch_version.positions import RotaryEmbedding
from tests.factory import tiny_gpt
from utils.fast import SpeedUps
from utils.runtime.config import ModelConfig, UserError


def _gpt2_twin(model):
    """transformers' GPT2LMHeadModel with `model`'s weights (GPT-2 keeps Conv1D weights transposed and
    q, k, v in one c_attn)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    config = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_position, n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.ffn_size, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )  # fmt: skip
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(model.tgt_embed.embedding.weight)
        hf.transformer.wpe.weight.copy_(model.positions.embedding.weight)
        for ours, theirs in zip(model.decoder.layers, hf.transformer.h):
            a = ours.self_attn
            theirs.attn.c_attn.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).T)
            theirs.attn.c_attn.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            theirs.attn.c_proj.weight.copy_(a.out_proj.weight.T)
            theirs.attn.c_proj.bias.copy_(a.out_proj.bias)
            theirs.mlp.c_fc.weight.copy_(ours.ffn.fc1.weight.T)
            theirs.mlp.c_fc.bias.copy_(ours.ffn.fc1.bias)
            theirs.mlp.c_proj.weight.copy_(ours.ffn.fc2.weight.T)
            theirs.mlp.c_proj.bias.copy_(ours.ffn.fc2.bias)
            for mine, its in ((ours.norm1, theirs.ln_1), (ours.norm2, theirs.ln_2)):
                its.weight.copy_(mine.weight)
                its.bias.copy_(mine.bias)
        hf.transformer.ln_f.weight.copy_(model.decoder.norm.weight)
        hf.transformer.ln_f.bias.copy_(model.decoder.norm.bias)
    return hf


def test_learned_positions_gelu_pre_ln_is_gpt2():
    model = tiny_gpt(positions="learned")
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up of them cannot hide
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = _gpt2_twin(model)
    tokens = torch.randint(4, 30, (3, 12))
    ours = model.forward_tokens(tokens)
    theirs = hf(input_ids=tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_rotary_matches_llama():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    B, H, T, d = 2, 3, 9, 16
    q, k = torch.randn(B, H, T, d), torch.randn(B, H, T, d)
    positions = torch.stack([torch.arange(T), torch.arange(5, 5 + T)])  # a row that starts later
    llama = LlamaConfig(hidden_size=H * d, num_attention_heads=H, max_position_embeddings=64)
    theirs_cos, theirs_sin = LlamaRotaryEmbedding(llama)(q, positions)
    q_theirs, k_theirs = apply_rotary_pos_emb(q, k, theirs_cos, theirs_sin)
    rotary = RotaryEmbedding(d, 64)
    torch.testing.assert_close(rotary(q, positions), q_theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotary(k, positions), k_theirs, atol=1e-6, rtol=0)


def test_rotary_scores_depend_on_distance_only():
    rotary, q, k = RotaryEmbedding(8, 64), torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda i, j: (rotary(q, torch.tensor([[i]])) * rotary(k, torch.tensor([[j]]))).sum()
    torch.testing.assert_close(score(3, 1), score(40, 38))
    assert not torch.allclose(score(3, 1), score(3, 2))


@pytest.mark.parametrize("positions", ["rotary", "learned", "sinusoidal"])
def test_changing_a_later_token_changes_no_earlier_logit(positions):
    model = tiny_gpt(positions=positions)
    tokens = torch.randint(4, 30, (2, 10))
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1 - 4) % 26 + 4
    before, after = model.forward_tokens(tokens), model.forward_tokens(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6], atol=0, rtol=0)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_a_rows_logits_do_not_depend_on_its_batch(positions):
    """Prompts of different lengths are padded; each row numbers its own real tokens."""
    model = tiny_gpt(positions=positions)
    src, tgt = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), torch.tensor([[1, 11, 12], [1, 13, 0]])
    together = model(src, tgt)
    alone = model(torch.tensor([[9, 10]]), torch.tensor([[1, 13]]))
    torch.testing.assert_close(together[1, :2], alone[0], atol=1e-6, rtol=0)
    assert torch.isfinite(together).all()


def test_explicit_path_equals_fused_and_shows_the_rotation():
    model = tiny_gpt()
    src, tgt = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), torch.tensor([[1, 11, 12], [1, 13, 0]])
    fused = model(src, tgt)
    _, cache = model.run_with_cache(src, tgt)  # listening to the weights forces the explicit path
    torch.testing.assert_close(cache["logits"][:, -3:], fused, atol=1e-5, rtol=0)
    assert {"decoder.0.self_attn.q_rot", "decoder.0.self_attn.k_rot", "decoder.1.self_attn.weights"} <= set(
        cache
    )
    assert not any(name.startswith(("encoder", "memory")) or "cross_attn" in name for name in cache)
    weights = cache["decoder.0.self_attn.weights"]  # (B, H, T, T): nothing above the diagonal
    assert weights.triu(1).abs().max() == 0


@pytest.mark.parametrize("speed", [SpeedUps.none(), SpeedUps()], ids=["readable", "fast"])
def test_cached_decoding_equals_uncached(speed):
    model = speed.plug_in(tiny_gpt())
    src = torch.tensor([[5, 6, 7, 8, 9], [9, 10, 0, 0, 0]])
    assert torch.equal(greedy_decode(model, src, 20), greedy_decode(model, src, 20, use_cache=False))
    beams, plain = beam_search(model, src, 3, 12), beam_search(model, src, 3, 12, use_cache=False)
    assert torch.equal(beams.sequences, plain.sequences)


def test_cached_step_logits_equal_the_full_forward():
    model = tiny_gpt()
    tokens = torch.randint(4, 30, (2, 30))
    full = model.forward_tokens(tokens)
    cache = model.new_cache()
    steps = [model.forward_tokens(tokens[:, :5], cache)] + [
        model.forward_tokens(tokens[:, t : t + 1], cache) for t in range(5, 30)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_gpt2_init_scales_the_residual_projections():
    shape = dict(
        src_vocab_size=50, tgt_vocab_size=50, hidden_size=64, num_layers=8, num_heads=4, ffn_size=256
    )
    model = model_for(ModelConfig(arch="gpt", init="gpt2", norm_first=True, positions="rotary", **shape))
    block = model.decoder.layers[0]
    assert abs(block.self_attn.q_proj.weight.std().item() - 0.02) < 0.003
    assert abs(block.ffn.fc2.weight.std().item() - 0.02 / 4) < 0.001  # 0.02 / sqrt(2 * 8)
    assert model.lm_head.weight is model.tgt_embed.embedding.weight


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(arch="transformer", positions="rotary"), "is for the other families"),
        (dict(arch="gpt", positions="rotary", hidden_size=36, num_heads=4), "must be even"),
        (dict(arch="gpt", tgt_vocab_size=31), "one vocabulary"),
        (dict(arch="t5"), "arch must be one of"),
        (dict(arch="bert", positions="rotary"), "rotary is for --arch gpt"),
        (dict(arch="vit", labels=("a",), image_size=8, channels=1, patch_size=3), "must divide"),
        (dict(arch="vit"), "must be a positive integer"),
        (dict(arch="gpt", pooling="mean"), "--pooling is for --arch bert"),
    ],
)
def test_bad_family_settings_are_one_line_errors(overrides, message):
    base = dict(src_vocab_size=30, tgt_vocab_size=30, hidden_size=32, num_heads=4)
    with pytest.raises(UserError, match=message) as err:
        ModelConfig(**{**base, **overrides})
    assert "\n" not in str(err.value)
