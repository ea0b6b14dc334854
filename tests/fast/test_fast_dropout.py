"""utils/fast/dropout.py keeps F.dropout's contract: the keep rate, the 1/(1-p) scale, the gradient,
identity in eval mode, reproducible under a seed, and the models use it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utils.fast.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_and_scale_match_p(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout(x, p, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002  # 1e6 draws: std 5e-4
    scale = y[kept].unique()
    assert scale.numel() == 1 and abs(scale.item() - 1 / (1 - p)) < 1e-4
    assert abs(y.mean().item() - 1.0) < 0.005  # expectation preserved, as F.dropout


def test_masks_are_independent_across_elements_and_calls():
    torch.manual_seed(1)
    a = dropout(torch.ones(200_000), 0.5, training=True) != 0
    b = dropout(torch.ones(200_000), 0.5, training=True) != 0
    assert abs((a & b).float().mean().item() - 0.25) < 0.005  # two calls: independent masks
    assert abs((a[:-1] & a[1:]).float().mean().item() - 0.25) < 0.005  # neighbours: independent
    assert abs((a[:-4] & a[4:]).float().mean().item() - 0.25) < 0.005  # across 64-bit draws


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(2)
    x = torch.randn(8, 5, 16, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    y.sum().backward()
    mask = (y != 0).float() * (y.detach() / x.detach()).max()
    torch.testing.assert_close(x.grad, mask)


def test_eval_p0_p1_and_seeded_reproducibility():
    x = torch.randn(4, 7, 9)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), F.dropout(x, 1.0, True))
    torch.manual_seed(3)
    first = dropout(x, 0.1, training=True)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.1, training=True))
    module = Dropout(0.1).eval()
    assert module(x) is x and isinstance(module, torch.nn.Dropout)


def test_the_swap_replaces_every_nn_dropout_of_both_versions_and_keeps_the_state_dict():
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.model import Transformer
    from utils.fast import SpeedUps
    from utils.runtime.config import ModelConfig

    model = Transformer(ModelConfig(src_vocab_size=11, tgt_vocab_size=11, hidden_size=16, num_layers=1,
                                    num_heads=2, ffn_size=32, dropout=0.2))  # fmt: skip
    hf = pytorch_to_hf(model)
    for m in (model, hf):
        keys = list(m.state_dict())
        readable = [x for x in m.modules() if type(x) is torch.nn.Dropout]
        assert readable and not any(isinstance(x, Dropout) for x in m.modules()), "readable: nn.Dropout"
        SpeedUps.only("fast_dropout").plug_in(m)
        assert not any(type(x) is torch.nn.Dropout for x in m.modules())
        swapped = [x for x in m.modules() if isinstance(x, Dropout)]
        assert len(swapped) == len(readable) and {x.p for x in swapped} == {x.p for x in readable}
        assert list(m.state_dict()) == keys
