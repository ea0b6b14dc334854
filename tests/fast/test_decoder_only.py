"""utils/fast/decoder_only.py: the GPT's training-step twin equals the readable forward, values and gradients,
in both versions, with and without padding, for every kind of positions and both LayerNorm placements."""

from __future__ import annotations

import pytest
import torch

from tests.factory import tiny_gpt, tiny_gpt_twins
from utils.fast import SpeedUps
from utils.fast.packing import LabelledLogits, readable_logits


def _batch(padded: bool):
    torch.manual_seed(1)
    if not padded:  # a language model's windows: no prompt, no padding
        tgt = torch.randint(4, 30, (3, 11))
        return tgt[:, :0], tgt, torch.ones_like(tgt, dtype=torch.bool)
    src, tgt = torch.randint(4, 30, (3, 5)), torch.randint(4, 30, (3, 4))
    src[1, 3:], tgt[2, 2:] = 0, 0  # a short prompt (pads before the completion), a short completion
    return src, tgt, tgt != 0


def _both(model, padded: bool):
    src, tgt, labelled = _batch(padded)
    keep = src != 0, tgt != 0
    twin = LabelledLogits(model, 0, packed=True)(src, tgt, labelled)
    readable = readable_logits(model, src, tgt, *keep)[labelled]
    return twin, readable


@pytest.mark.parametrize("padded", [False, True], ids=["windows", "padded-prompts"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positions": "learned"},
        {"positions": "sinusoidal"},
        {"norm_first": False},
        {"activation": "relu"},
    ],
    ids=["rotary", "learned", "sinusoidal", "post-LN", "relu"],
)
def test_twin_equals_the_readable_step_in_values_and_gradients(overrides, padded):
    model = tiny_gpt(**overrides).train()  # dropout 0 in the tiny config: the two draw no masks
    twin, readable = _both(model, padded)
    torch.testing.assert_close(twin, readable, atol=1e-5, rtol=0)
    weights = torch.randn_like(twin)
    grads = []
    for out in (twin, readable):  # two separate graphs over the same parameters
        model.zero_grad()
        (out * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("padded", [False, True], ids=["windows", "padded-prompts"])
def test_twin_equals_the_readable_step_for_the_hf_gpt(padded):
    _, hf = tiny_gpt_twins()
    twin, readable = _both(hf.train(), padded)
    torch.testing.assert_close(twin, readable, atol=1e-5, rtol=0)


def test_the_twin_steps_aside_when_something_listens_or_no_fast():
    model = SpeedUps().plug_in(tiny_gpt())
    calls = []
    handle = model.decoder.layers[0].self_attn.hook_weights.register_forward_hook(lambda *a: calls.append(1))
    _both(model, padded=False)
    assert calls, "a listening capture point must see the readable forward"
    handle.remove()
    calls.clear()
    src, tgt, labelled = _batch(False)
    LabelledLogits(model, 0, packed=False)(src, tgt, labelled)
    assert not calls
