"""The masked LM's training-step twin (utils/fast/encoder_only.py) equals the readable forward at the
masked positions, and a [CLS] classifier's (ViT, BERT) at [CLS]: values and gradients, post-LN and pre-LN,
with padding, dropout off."""

from __future__ import annotations

import pytest
import torch

from tests.factory import tiny_bert, tiny_vit
from utils.fast import SpeedUps
from utils.fast.encoder_only import encoder_only_logits


@pytest.mark.parametrize("norm_first", [False, True])
def test_the_twin_equals_the_readable_forward_at_the_masked_rows(norm_first):
    model = tiny_bert(dropout=0.0, norm_first=norm_first).train()
    src = torch.randint(7, 30, (4, 13), generator=torch.Generator().manual_seed(0))
    src[2, 9:] = 0  # padding
    labelled = torch.rand(4, 13, generator=torch.Generator().manual_seed(1)) < 0.3
    labelled[1] = False  # a row with nothing masked
    labelled[3, :5] = True
    labelled &= src != 0

    def run(fn):
        model.zero_grad()
        out = fn()
        (out * torch.linspace(-1, 1, out.size(-1))).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    twin, twin_grads = run(lambda: encoder_only_logits(model, src, labelled))
    readable, readable_grads = run(lambda: model(src)[labelled])
    torch.testing.assert_close(twin, readable, atol=1e-5, rtol=1e-4)
    assert twin_grads.keys() == readable_grads.keys()
    for name in twin_grads:
        torch.testing.assert_close(twin_grads[name], readable_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_trainer_s_step_takes_the_twin_unless_something_watches():
    model = tiny_bert(dropout=0.0).eval()
    src = torch.randint(7, 30, (2, 9))
    labelled = torch.zeros(2, 9, dtype=torch.bool)
    labelled[:, 3] = True
    step = SpeedUps().labelled_logits(model, 0)
    expected = model(src)[labelled]
    torch.testing.assert_close(step(src, src[:, :0], labelled), expected, atol=1e-5, rtol=1e-4)
    handle = model.encoder.layers[0].register_forward_hook(lambda *a: None)  # watched: the readable path
    torch.testing.assert_close(step(src, src[:, :0], labelled), expected, atol=1e-5, rtol=1e-4)
    handle.remove()


def _same_values_and_gradients(model, twin_fn, readable_fn):
    outputs = []
    for fn in (twin_fn, readable_fn):
        model.zero_grad()
        out = fn()
        (out * torch.linspace(-1, 1, out.size(-1))).sum().backward()
        outputs.append(
            (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (twin, twin_grads), (readable, readable_grads) = outputs
    torch.testing.assert_close(twin, readable, atol=1e-5, rtol=1e-4)
    assert twin_grads.keys() == readable_grads.keys()
    for name in twin_grads:
        torch.testing.assert_close(twin_grads[name], readable_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["vit", "bert_cls", "bert_mean"])
def test_a_classifier_s_twin_equals_the_readable_forward(kind):
    if kind == "vit":
        model, src = tiny_vit(dropout=0.0).train(), torch.rand(5, 1, 8, 8)
    else:
        pooling = kind.removeprefix("bert_")
        model = tiny_bert(dropout=0.0, labels=("no", "yes", "maybe"), pooling=pooling).train()
        src = torch.randint(7, 30, (5, 11))
        src[1, 6:] = 0
    labelled = torch.ones(5, dtype=torch.bool)
    _same_values_and_gradients(model, lambda: encoder_only_logits(model, src, labelled), lambda: model(src))
