"""Attention: the fused and explicit paths agree, masks hide what they must, tracing is opt-in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pytorch_version.attention import ATTENTION_FUNCTIONS, KVCache, MultiHeadAttention
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.observe.tracing import capture

pytestmark = pytest.mark.usefixtures("single_thread")

PAD, BOS = 0, 1
NORM_FIRST = pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
EXPLICIT = pytest.mark.parametrize("explicit", [False, True], ids=["fused", "explicit"])


def _model(norm_first: bool = False, explicit: bool = False) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config(norm_first=norm_first)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.set_explicit_attention(explicit)
    return model


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (3, 7), generator=g)
    src[0, 5:] = PAD
    src[2, 3:] = PAD
    tgt = torch.randint(4, 30, (3, 6), generator=g)
    tgt[:, 0] = BOS
    tgt[1, 4:] = PAD
    return src, tgt


@NORM_FIRST
def test_fused_and_explicit_paths_give_the_same_logits(norm_first):
    model = _model(norm_first)
    src, tgt = _tokens()
    fused = model(src, tgt)
    model.set_explicit_attention(True)
    explicit = model(src, tgt)
    assert all(m.why_explicit() == "force_explicit is set" for m in _attention_modules(model))
    model.set_explicit_attention(False)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(src, tgt), fused, atol=0, rtol=0)


def test_fused_and_explicit_paths_agree_in_training_mode_without_dropout():
    model = _model().train()  # dropout is 0 in tiny_config, so training mode changes nothing
    src, tgt = _tokens()
    fused = model(src, tgt)
    model.set_explicit_attention(True)
    torch.testing.assert_close(model(src, tgt), fused, atol=1e-5, rtol=0)


def test_run_with_cache_returns_the_same_logits_as_forward():
    model = _model()
    src, tgt = _tokens()
    logits, cache = model.run_with_cache(src, tgt)
    torch.testing.assert_close(logits, model(src, tgt), atol=1e-5, rtol=0)
    torch.testing.assert_close(cache["logits"], logits, atol=0, rtol=0)


def _attention_modules(model: Transformer) -> list[MultiHeadAttention]:
    return [m for m in model.modules() if isinstance(m, MultiHeadAttention)]


def test_fused_kernel_runs_unless_scores_or_weights_are_wanted(monkeypatch):
    model = _model()
    src, tgt = _tokens()
    calls = []
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setitem(ATTENTION_FUNCTIONS, "sdpa", counting)  # what the fused path calls
    n_attention = len(_attention_modules(model))  # 2 encoder + 2 x 2 decoder = 6

    model(src, tgt)
    assert len(calls) == n_attention
    model.run_with_cache(src, tgt, names="*.q")  # q is formed by both paths: stay fused
    assert len(calls) == 2 * n_attention
    model.run_with_cache(src, tgt, names="*.weights")
    assert len(calls) == 2 * n_attention, "the fused kernel ran although the weights were wanted"
    model.run_with_cache(src, tgt, names="decoder.0.cross_attn.scores")  # only that module goes explicit
    assert len(calls) == 3 * n_attention - 1


def test_why_explicit_names_the_reason_and_hooks_are_removed_after_capture():
    model = _model()
    attn = model.encoder.layers[0].self_attn
    assert attn.why_explicit() is None
    with capture(model, "encoder.0.self_attn.weights"):
        reason = attn.why_explicit()
        assert model.encoder.layers[1].self_attn.why_explicit() is None
    assert reason is not None and "weights" in reason
    assert attn.why_explicit() is None, "the capture hooks outlived the with block"
    with capture(model, "*.v"):
        assert attn.why_explicit() is None  # values exist on the fused path too
    attn.force_explicit = True
    assert attn.why_explicit() == "force_explicit is set"


def test_hooks_are_removed_even_when_the_forward_fails():
    model = _model()
    with pytest.raises(IndexError), capture(model, "*.weights"):
        model(torch.tensor([[99]]), torch.tensor([[BOS]]))  # token id beyond the vocabulary
    assert all(m.why_explicit() is None for m in _attention_modules(model))


@EXPLICIT
def test_changing_a_padded_source_token_changes_no_output(explicit):
    model = _model(explicit=explicit)
    src, tgt = _tokens()
    src_mask = model.src_mask(src)  # computed once: the pads stay pads as far as the mask goes
    changed = src.clone()
    changed[0, 5:] = torch.tensor([7, 8])
    changed[2, 3:] = 9

    memory, memory_changed = model.encode(src, src_mask), model.encode(changed, src_mask)
    real = src != PAD
    torch.testing.assert_close(memory_changed[real], memory[real], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        model.decode(tgt, memory_changed, src_mask), model.decode(tgt, memory, src_mask), atol=1e-6, rtol=0
    )
    # the check has teeth: the same change with the mask rebuilt from the tokens is visible
    unmasked = model.decode(tgt, model.encode(changed), model.src_mask(changed))
    assert not torch.allclose(unmasked[0], model.decode(tgt, memory, src_mask)[0], atol=1e-4)


@EXPLICIT
def test_extra_source_padding_changes_no_logit(explicit):
    model = _model(explicit=explicit)
    src, tgt = _tokens()
    padded = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    torch.testing.assert_close(model(padded, tgt), model(src, tgt), atol=1e-5, rtol=0)


@EXPLICIT
@NORM_FIRST
def test_changing_a_future_target_token_leaves_earlier_logits_alone(explicit, norm_first):
    model = _model(norm_first, explicit)
    src, tgt = _tokens()
    before = model(src, tgt)
    for j in range(1, tgt.size(1)):
        changed = tgt.clone()
        changed[:, j] = (changed[:, j] + 5) % 26 + 4  # another real token
        after = model(src, changed)
        torch.testing.assert_close(after[:, :j], before[:, :j], atol=1e-6, rtol=0)
        assert not torch.allclose(after[:, j], before[:, j], atol=1e-4), f"position {j} ignored its input"


def test_cached_attention_weights_are_distributions_that_ignore_masked_keys():
    model = _model()
    src, tgt = _tokens()
    _, cache = model.run_with_cache(src, tgt, names="*.weights")
    B, S, T, H = src.size(0), src.size(1), tgt.size(1), model.config.num_heads
    src_real = (src != PAD)[:, None, None, :]  # (B, 1, 1, S) over keys
    tgt_visible = torch.ones(T, T, dtype=torch.bool).tril() & (tgt != PAD)[:, None, None, :]
    expected_visible = {"encoder.{i}.self_attn": src_real, "decoder.{i}.cross_attn": src_real,
                        "decoder.{i}.self_attn": tgt_visible}  # fmt: skip
    for i in range(model.config.num_layers):
        for pattern, visible in expected_visible.items():
            weights = cache[f"{pattern.format(i=i)}.weights"]
            queries = S if pattern.startswith("encoder") else T
            keys = S if "self" not in pattern or pattern.startswith("encoder") else T
            assert weights.shape == (B, H, queries, keys)
            torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, queries), atol=1e-5, rtol=0)
            hidden = ~visible.expand_as(weights)
            assert torch.all(weights[hidden] == 0), f"{pattern.format(i=i)} attends to a masked key"
            assert torch.all(weights[~hidden] > 0)


def test_run_with_cache_filters_by_glob_list_and_predicate():
    model = _model()
    src, tgt = _tokens()
    _, weights_only = model.run_with_cache(src, tgt, names="*.weights")
    expected = {f"encoder.{i}.self_attn.weights" for i in range(2)} | {
        f"decoder.{i}.{m}.weights" for i in range(2) for m in ("self_attn", "cross_attn")
    }
    assert set(weights_only) == expected

    _, listed = model.run_with_cache(src, tgt, names=["src_embed", "decoder.1.ffn.*"])
    assert set(listed) == {
        "src_embed",
        "decoder.1.ffn.pre_act",
        "decoder.1.ffn.post_act",
        "decoder.1.ffn.out",
    }

    _, picked = model.run_with_cache(src, tgt, names=lambda name: name.endswith(".z"))
    assert set(picked) == {name.replace(".weights", ".z") for name in expected}
    assert picked["encoder.0.self_attn.z"].shape == (3, 4, src.size(1), 8)  # (B, H, S, d_k)

    _, everything = model.run_with_cache(src, tgt)
    assert expected | set(listed) | set(picked) < set(everything)
    assert not any(t.requires_grad for t in everything.values())  # detached by default


def test_kv_cache_append_equals_concatenation_and_leaves_handed_out_views_alone():
    torch.manual_seed(0)
    cache, steps, handed_out = KVCache(), [], []
    for _ in range(40):  # the buffer grows twice
        k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
        steps.append((k, v))
        got_k, got_v = cache.append("0.self", k, v)
        handed_out.append((got_k, got_k.clone()))
        assert torch.equal(got_k, torch.cat([s[0] for s in steps], dim=2))
        assert torch.equal(got_v, torch.cat([s[1] for s in steps], dim=2))
    assert len(cache) == 40 and all(torch.equal(view, copy) for view, copy in handed_out)

    order = torch.tensor([1, 0])
    cache.reorder(order)
    assert torch.equal(cache.store["0.self"][0], torch.cat([s[0] for s in steps], dim=2)[order])

    k5, v5 = (x[:, :, :5].clone() for x in cache.store["0.self"])
    cache.store["0.self"] = (k5, v5)  # set from outside: the next append starts from it
    new_k, new_v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    got_k, got_v = cache.append("0.self", new_k, new_v)
    assert torch.equal(got_k, torch.cat([k5, new_k], dim=2)) and torch.equal(
        got_v, torch.cat([v5, new_v], dim=2)
    )
