"""The hook tracker on the HF GPT: its activation cache equals pytorch_version.gpt's; hooks leave no trace."""

from __future__ import annotations

import pytest
import torch

from huggingface_version.hooks import hook_count, record_activations
from tests.factory import tiny_gpt_twins
from utils.observe.tracing import run_with_cache

pytestmark = pytest.mark.usefixtures("single_thread")
SRC = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])  # pads between the prompt and the target, as pytorch's
TGT = torch.tensor([[1, 11, 12], [1, 13, 0]])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"positions": "learned"}, {"positions": "sinusoidal", "norm_first": False, "activation": "relu"}],
    ids=["rotary-preLN", "learned-preLN", "sinusoidal-postLN"],
)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hook_cache_equals_the_pytorch_cache(overrides, attn):
    pt, hf = tiny_gpt_twins(attn, **overrides)
    pt_logits, expected = pt.run_with_cache(SRC, TGT)
    hf_logits, got = run_with_cache(hf, SRC, TGT)
    assert list(got) == list(expected)  # the same names, in the same (execution) order
    assert ("decoder.0.self_attn.q_rot" in got) == (overrides.get("positions", "rotary") == "rotary")
    assert not any(name.startswith(("encoder", "memory", "src")) for name in got)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=name)
    assert got["logits"].shape == (2, 7, 30) and hf_logits.shape == (
        2,
        3,
        30,
    )  # the cache: the whole sequence
    torch.testing.assert_close(hf_logits, pt_logits, rtol=0, atol=1e-5)
    assert hook_count(hf) == 0


def test_name_filters_leave_the_outputs_unchanged_and_errors_leave_no_hooks():
    _, hf = tiny_gpt_twins()
    ids = torch.cat([SRC, TGT], dim=1)
    with torch.no_grad():
        plain = hf(input_ids=ids, attention_mask=(ids != 0).long()).logits[:, 4:]
    logits, cache = run_with_cache(hf, SRC, TGT, names="*.weights")
    assert sorted(cache) == ["decoder.0.self_attn.weights", "decoder.1.self_attn.weights"]
    assert torch.equal(logits, plain)  # looking changes nothing
    assert cache["decoder.0.self_attn.weights"].triu(1).abs().max() == 0  # nothing above the diagonal
    with pytest.raises(RuntimeError, match="boom"), record_activations(hf):
        assert hook_count(hf) > 0
        raise RuntimeError("boom")
    assert hook_count(hf) == 0


def test_recording_during_cached_generation_keeps_one_entry_per_step():
    _, hf = tiny_gpt_twins()
    ids = torch.tensor([[0, 0, 5, 6, 1], [7, 8, 9, 10, 1]])
    with record_activations(hf, ["decoder.0.self_attn.k", "decoder.0.self_attn.q_rot", "tgt_embed"]) as cache:
        out = hf.generate(input_ids=ids, attention_mask=(ids != 0).long(), max_new_tokens=4, min_new_tokens=4)
    steps = out.size(1) - ids.size(1)
    assert steps == 4 and len(cache["tgt_embed"]) == steps  # the prompt once, then one token a step
    # the keys grow by one position a step (read back from the DynamicCache, already turned)
    assert [k.size(2) for k in cache["decoder.0.self_attn.k"]] == list(range(5, 5 + steps))
    assert [q.size(2) for q in cache["decoder.0.self_attn.q_rot"]] == [5, 1, 1, 1]
