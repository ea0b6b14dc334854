"""The hook tracker on the HF encoder-only models: their activation cache equals pytorch_version's
(BERT's masked LM and classifier, the ViT), under the same names; looking leaves no hooks behind."""

from __future__ import annotations

import pytest
import torch

from huggingface_version.hooks import hook_count
from huggingface_version.hooks_encoder import record_encoder_activations
from tests.factory import tiny_encoder_twins
from utils.observe.tracing import run_with_cache

pytestmark = pytest.mark.usefixtures("single_thread")
IDS = torch.tensor([[4, 7, 6, 9, 10, 5], [4, 12, 6, 5, 0, 0]])  # the second row padded
IMAGES = torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize(
    "arch, overrides",
    [("bert", {}), ("bert", {"labels": ("a", "b")}), ("bert", {"labels": ("a", "b"), "pooling": "mean",
     "norm_first": True, "positions": "sinusoidal"}), ("vit", {})],
    ids=["mlm", "cls-classifier", "mean-preLN-sinusoidal", "vit"],
)  # fmt: skip
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hook_cache_equals_the_pytorch_cache(arch, overrides, attn):
    pt, hf = tiny_encoder_twins(arch, attn, **overrides)
    src = IMAGES if arch == "vit" else IDS
    pt_logits, expected = pt.run_with_cache(src, None)
    hf_logits, got = run_with_cache(hf, src, None)
    assert list(got) == list(expected)  # the same names, in the same (execution) order
    for name in ("src_embed", "src_pos", "memory", "logits", "encoder.1.self_attn.weights"):
        assert name in got, name
    assert ("head.pooled" in got) == (arch == "vit" or "labels" in overrides)
    for name, value in expected.items():  # a pad's row too: it attends to the real tokens, as in pytorch
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(hf_logits, pt_logits, rtol=0, atol=1e-5)
    assert hook_count(hf) == 0


def test_a_filter_keeps_only_the_maps_and_an_error_leaves_no_hooks():
    _, hf = tiny_encoder_twins("bert", labels=("a", "b"))
    logits, cache = run_with_cache(hf, IDS, None, names="*.weights")
    assert sorted(cache) == ["encoder.0.self_attn.weights", "encoder.1.self_attn.weights"]
    assert cache["encoder.0.self_attn.weights"][1, :, :, 4:].abs().max() == 0  # nobody looks at a pad
    with torch.no_grad():
        torch.testing.assert_close(logits, hf(input_ids=IDS).logits, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), record_encoder_activations(hf):
        assert hook_count(hf) > 0
        raise RuntimeError("boom")
    assert hook_count(hf) == 0
