"""The hook tracker: the HF model's activation cache equals pytorch_version's; hooks leave no trace."""

from __future__ import annotations

import pytest
import torch

from huggingface_version.hooks import hook_count, record_activations
from tests.factory import tiny_twins
from utils.observe.tracing import run_with_cache

pytestmark = pytest.mark.usefixtures("single_thread")


def twins(attn: str = "sdpa", **overrides):
    return tiny_twins(attn, **overrides)


@pytest.fixture
def padded_batch(batch):
    src, tgt = batch
    tgt = tgt.clone()
    tgt[1, 4:] = 0
    return src, tgt


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hook_cache_equals_the_pytorch_cache(padded_batch, norm_first, attn):
    src, tgt = padded_batch
    pt, hf = twins(attn, norm_first=norm_first)
    pt_logits, expected = pt.run_with_cache(src, tgt)
    hf_logits, got = run_with_cache(hf, src, tgt)
    assert list(got) == list(expected)  # the same names, in the same (execution) order
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(hf_logits, pt_logits, rtol=0, atol=1e-5)
    assert hook_count(hf) == 0


def test_name_filters_and_outputs_unchanged(padded_batch):
    src, tgt = padded_batch
    _, hf = twins()
    with torch.no_grad():
        plain = hf(input_ids=src, decoder_input_ids=tgt).logits
    logits, cache = run_with_cache(hf, src, tgt, names="*.weights")
    assert sorted(cache) == sorted(
        f"{stack}.{i}.{m}.weights" for stack, m in [("encoder", "self_attn"), ("decoder", "self_attn"),
                                                      ("decoder", "cross_attn")] for i in range(2)
    )  # fmt: skip
    assert torch.equal(logits, plain)  # looking changes nothing
    _, cache = run_with_cache(hf, src, tgt, names=["logits", "decoder.1.ffn.*"])
    assert set(cache) == {"logits", "decoder.1.ffn.pre_act", "decoder.1.ffn.post_act", "decoder.1.ffn.out"}
    _, cache = run_with_cache(hf, src, tgt, names=lambda n: n.endswith(".z"))
    assert len(cache) == 6 and cache["encoder.0.self_attn.z"].shape == (3, 4, 7, 8)


def test_hooks_are_removed_after_the_block_even_on_error(padded_batch):
    src, tgt = padded_batch
    _, hf = twins()
    assert hook_count(hf) == 0
    with record_activations(hf) as cache:
        assert hook_count(hf) > 0
        hf(input_ids=src, decoder_input_ids=tgt)
    assert hook_count(hf) == 0 and "memory" in cache
    with pytest.raises(RuntimeError, match="boom"), record_activations(hf):
        raise RuntimeError("boom")
    assert hook_count(hf) == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hf.modules())


def test_recording_during_cached_generation_keeps_one_entry_per_step(padded_batch):
    src, _ = padded_batch
    _, hf = twins()
    with torch.no_grad():  # sharper weights, so generation runs several steps
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    with record_activations(hf, ["decoder.0.self_attn.k", "decoder.0.cross_attn.k", "src_embed"]) as cache:
        out = hf.generate(src, max_new_tokens=4, min_new_tokens=4)
    steps = out.size(1) - 1
    assert torch.is_tensor(cache["src_embed"])  # the encoder runs once
    assert len(cache["decoder.0.self_attn.k"]) == steps
    # self-attention keys grow by one position per step (read back from the Cache)
    assert [k.size(2) for k in cache["decoder.0.self_attn.k"]] == list(range(1, steps + 1))
    assert all(k.size(2) == src.size(1) for k in cache["decoder.0.cross_attn.k"])


def test_shared_analyzer_runs_on_the_hf_model(padded_batch):
    from utils.observe.analysis import TransformerAnalyzer

    src, tgt = padded_batch
    pt, hf = twins()
    reports = [
        TransformerAnalyzer(m).analyze_qkv_statistics(run_with_cache(m, src, tgt)[1], src, tgt)
        for m in (pt, hf)
    ]
    assert reports[0].keys() == reports[1].keys()
    for name in reports[0]:
        for a, b in zip(reports[0][name], reports[1][name]):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5), name
