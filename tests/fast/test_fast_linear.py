"""utils/fast/output_layer.py: the output layer's packed inference path equals F.linear, is taken only
where no gradient is wanted, follows every change of the weight, and both models use it."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_config
from utils.fast.output_layer import ONEDNN, OutputLinear

needs_onednn = pytest.mark.skipif(not ONEDNN, reason="torch built without oneDNN: F.linear is used")


@pytest.fixture
def packed_calls(monkeypatch) -> list:
    """Counts the calls that take the packed path (oneDNN's linear with the packed weight)."""
    calls, linear_pointwise = [], torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(
        torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or linear_pointwise(*a)
    )
    return calls


def _eval(layer: OutputLinear) -> OutputLinear:
    return layer.eval()


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 32), (64, 32), (5, 7, 32), (3, 1, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_path_equals_f_linear(shape, bias, packed_calls):
    torch.manual_seed(0)
    layer = OutputLinear(32, 500, bias=bias).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = layer(x)
    assert packed_calls == [1] and layer._packed is not None  # the packed path ran and keeps its copy
    assert y.shape == (*shape[:-1], 500)
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # from mkldnn.flags()
def test_where_the_packed_path_would_differ_it_is_f_linear(packed_calls, monkeypatch):
    layer = OutputLinear(16, 40).eval()
    x = torch.randn(3, 16)
    with torch.no_grad():
        with torch.autocast("cpu", torch.bfloat16):  # F.linear gives bfloat16 here
            assert layer(x).dtype == torch.bfloat16
        with monkeypatch.context() as m:
            m.setattr(torch.compiler, "is_compiling", lambda: True)  # Inductor cannot lower the op
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
        with torch.backends.mkldnn.flags(enabled=False):
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
        layer.train()  # training mode: the weight is about to change
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert packed_calls == [] and layer._packed is None


def test_with_gradients_it_is_f_linear_exactly():
    torch.manual_seed(0)
    layer = OutputLinear(16, 40).eval()
    x = torch.randn(8, 16, requires_grad=True)
    y = layer(x)  # a gradient is wanted: the packed copy is not used
    assert torch.equal(y, F.linear(x, layer.weight, layer.bias))
    y.square().sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


@needs_onednn
def test_the_copy_follows_every_change_of_the_weight():
    """Fused Adam changes a weight in place without bumping its version counter, but only while
    training, and `train()` drops the copy; changes outside training bump the version."""
    torch.manual_seed(0)
    layer = OutputLinear(16, 40)
    x = torch.randn(4, 16)
    opt = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)

    def check():
        layer.eval()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        assert layer._packed is not None

    check()
    layer.train()
    assert layer._packed is None
    layer(x).sum().backward()
    opt.step()
    check()
    layer.load_state_dict({"weight": torch.randn(40, 16), "bias": torch.randn(40)})
    check()
    with torch.no_grad():
        layer.weight.mul_(2.0)
    check()
    with torch.no_grad():
        layer.weight = torch.nn.Parameter(torch.randn(40, 16))  # another tensor
    check()


def test_copies_pickles_and_state_dict_are_those_of_nn_linear():
    layer = OutputLinear(16, 40, bias=False).eval()
    with torch.no_grad():
        layer(torch.randn(2, 16))
    assert list(layer.state_dict()) == ["weight"]
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._packed is None and torch.equal(clone.weight, layer.weight)


@needs_onednn
def test_plugged_into_both_models_they_decode_with_it_and_keep_the_tied_weight(packed_calls):
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.decoding import beam_search, greedy_decode
    from pytorch_version.model import Transformer
    from utils.fast import SpeedUps

    torch.manual_seed(0)
    cfg = tiny_config()
    model = Transformer(cfg).eval()
    hf = pytorch_to_hf(model).eval()
    src = torch.randint(4, cfg.src_vocab_size, (6, 9))
    greedy = greedy_decode(model, src, 5)
    assert packed_calls == [], "the readable model has a plain nn.Linear"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for m in (model, hf):
        SpeedUps.only("packed_output_layer").plug_in(m)
        assert isinstance(m.lm_head, OutputLinear)
    assert model.lm_head.weight is model.tgt_embed.embedding.weight
    assert hf.lm_head.weight is hf.model.decoder.embed_tokens.weight
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())

    assert torch.equal(greedy_decode(model, src, 5), greedy)
    assert len(packed_calls) == 5
    beam_search(model, src, 3, 4)
    assert len(packed_calls) == 9
    hf.generate(input_ids=src, attention_mask=torch.ones_like(src), max_new_tokens=4, min_new_tokens=4)
    assert len(packed_calls) >= 13


@needs_onednn
def test_a_fused_step_in_eval_mode_a_new_parameter_and_inference_tensors_are_all_seen():
    """The review's cases: fused Adam changes a weight without a version bump, even in eval mode
    (torch's optimizer-step hook is counted); a new Parameter in the old one's memory is another
    tensor; weights made under inference_mode have no version counter (F.linear then)."""
    torch.manual_seed(0)
    layer = OutputLinear(16, 40).eval()
    x = torch.randn(4, 16)

    def same_as_f_linear() -> bool:
        with torch.no_grad():
            return torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)

    assert same_as_f_linear()
    opt = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)
    layer(x).sum().backward()  # still in eval mode
    opt.step()
    assert same_as_f_linear()
    for _ in range(5):
        layer.load_state_dict({"weight": torch.randn(40, 16), "bias": torch.randn(40)}, assign=True)
        assert same_as_f_linear()
    with torch.inference_mode():
        made_there = OutputLinear(16, 40).eval()
        made_there(x)
    with torch.no_grad():
        assert torch.equal(made_there(x), F.linear(x, made_there.weight, made_there.bias))
