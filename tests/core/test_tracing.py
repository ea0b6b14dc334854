"""Capture points, the activation cache and the --debug trace."""

import re

import pytest
import torch

from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.data.tokenizer import CharTokenizer
from utils.observe.trace_printer import parse_selection, trace_example
from utils.observe.tracing import cache_name, capture, hook_points

ATTN = ("q_proj", "k_proj", "v_proj", "q", "k", "v", "scores", "masked_scores", "weights", "z",
        "concat", "out")  # fmt: skip


def expected_names(num_layers: int) -> set[str]:
    names = {"src_embed", "src_pos", "tgt_embed", "tgt_pos", "memory", "logits"}
    for i in range(num_layers):
        for side, attns, norms, resids in (
            ("encoder", ("self_attn",), (1, 2), ("pre", "mid", "post")),
            ("decoder", ("self_attn", "cross_attn"), (1, 2, 3), ("pre", "mid", "cross", "post")),
        ):
            names |= {f"{side}.{i}.{a}.{s}" for a in attns for s in ATTN}
            names |= {f"{side}.{i}.ffn.{s}" for s in ("pre_act", "post_act", "out")}
            names |= {f"{side}.{i}.norm{n}.{s}" for n in norms for s in ("in", "out")}
            names |= {f"{side}.{i}.resid_{r}" for r in resids}
    return names


def test_cache_names_complete_and_shapes(tiny_model, batch):
    src, tgt = batch
    _, cache = tiny_model.run_with_cache(src, tgt)
    assert set(cache) == expected_names(2)
    B, S, T, H, d_k = 3, src.size(1), tgt.size(1), 4, 8
    assert cache["encoder.0.self_attn.q"].shape == (B, H, S, d_k)
    assert cache["encoder.1.self_attn.weights"].shape == (B, H, S, S)
    assert cache["decoder.0.self_attn.weights"].shape == (B, H, T, T)
    assert cache["decoder.1.cross_attn.weights"].shape == (B, H, T, S)
    assert cache["decoder.1.cross_attn.k"].shape == (B, H, S, d_k)
    assert cache["decoder.0.cross_attn.concat"].shape == (B, T, 32)
    assert cache["encoder.0.ffn.pre_act"].shape == (B, S, 64)
    assert cache["logits"].shape == (B, T, 30)


def test_pre_ln_has_final_norms(batch):
    model = Transformer(tiny_config(norm_first=True)).eval()
    _, cache = model.run_with_cache(*batch, names="*.norm.*")
    assert set(cache) == {"encoder.norm.in", "encoder.norm.out", "decoder.norm.in", "decoder.norm.out"}


def test_tracing_does_not_change_outputs(tiny_model, batch):
    plain = tiny_model(*batch)
    logits, _ = tiny_model.run_with_cache(*batch)  # explicit attention path
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)
    logits, cache = tiny_model.run_with_cache(*batch, names=["*.q", "*.resid_post"])  # fused path
    assert torch.equal(logits, plain)
    assert all(n.endswith((".q", ".resid_post")) for n in cache)


def test_fused_path_unless_someone_listens(tiny_model):
    attn = tiny_model.encoder.layers[0].self_attn
    assert attn.why_explicit() is None
    with capture(tiny_model, "encoder.0.self_attn.weights"):
        assert "weights" in attn.why_explicit()
    with capture(tiny_model, "encoder.0.self_attn.z"):
        assert attn.why_explicit() is None  # z comes out of the fused kernel too


def test_hooks_removed_after_block_even_on_error(tiny_model, batch):
    with pytest.raises(RuntimeError), capture(tiny_model):
        raise RuntimeError("boom")
    assert not any(p._forward_hooks for p in hook_points(tiny_model).values())


def test_cache_name_mapping():
    assert cache_name("decoder.layers.1.cross_attn.hook_weights") == "decoder.1.cross_attn.weights"
    assert cache_name("hook_logits") == "logits"


def test_debug_trace_has_numbered_steps_for_every_layer(tiny_model, batch):
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz")
    text = trace_example(tiny_model, *batch, tok.tokens, layers="all", heads="0,1")
    for side in ("Encoder", "Decoder"):
        for i in range(2):
            assert f"{side} layer {i}" in text
    steps = ["1. Linear projections", "2. Reshape for heads", "3. Scores = Q K^T / sqrt(d_k)", "4. Mask",
             "5. Softmax", "6. Weighted sum", "7. Concatenate heads"]  # fmt: skip
    for step in steps:
        assert text.count(step) == 2 + 2 * 2, step  # encoder self x2, decoder self + cross x2
    assert "zeroed by the ReLU" in text and "LayerNorm output" in text
    assert text.index("ENCODER") < text.index("DECODER") < text.index("OUTPUT")
    # padding is cut from the traced example: row 0 of the batch has 5 real source tokens
    assert re.search(r"blocked per head\s+0 of 25", text)


def test_debug_layer_selection(tiny_model, batch):
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz")
    text = trace_example(tiny_model, *batch, tok.tokens, layers="1")
    assert "Encoder layer 1" in text and "Encoder layer 0" not in text


@pytest.mark.parametrize("spec", ["5", "x", "", "-1"])
def test_bad_selection_rejected(spec):
    with pytest.raises(ValueError, match="--debug_layers"):
        parse_selection(spec, 2, "layers")
