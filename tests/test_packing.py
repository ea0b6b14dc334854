"""Training steps on packed rows (utils/fast/packing.py): the same logits and gradients as the padded path,
taken only when nothing traces, in both versions."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import COPY_RUN, tiny_config
from utils.fast import packing
from utils.observe.tracing import capture
from utils.runtime.config import RunConfig


@pytest.fixture
def padded_batch():
    """Sources and shifted targets with padding of different lengths, and the labelled positions."""
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, 30, (5, 9), generator=g)
    tgt = torch.randint(4, 30, (5, 7), generator=g)
    tgt[:, 0] = 1
    for row, (s, t) in enumerate([(9, 7), (4, 3), (2, 5), (6, 1), (9, 2)]):
        src[row, s:], tgt[row, t:] = 0, 0
    labelled = tgt != 0
    labelled[3, 1] = True  # a label where the decoder input is padding: that row must be computed too
    return src, tgt, labelled


@pytest.fixture
def count_packings(monkeypatch):
    """How many batches were packed: counts the calls of Rows.of."""
    calls = []
    original = packing.Rows.of.__func__

    def spy(cls, src_keep, tgt_keep):
        calls.append((src_keep.clone(), tgt_keep.clone()))
        return original(cls, src_keep, tgt_keep)

    monkeypatch.setattr(packing.Rows, "of", classmethod(spy))
    return calls


def test_pack_and_unpack_invert_each_other_on_the_kept_positions():
    keep = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    x = torch.randn(3, 3, 4)
    p = packing.Packing(keep)
    rows = p.pack(x)
    assert rows.shape == (6, 4)
    torch.testing.assert_close(rows, x[keep])  # the same order as boolean indexing
    back = p.unpack(rows)
    torch.testing.assert_close(back[keep], x[keep])
    assert back[~keep].abs().sum() == 0  # zeros where the padding was
    labelled = keep & torch.tensor([[False, True, True], [True, True, True], [True, False, True]])
    torch.testing.assert_close(packing.labelled_rows(rows, p, labelled), x[labelled])


def _logits_and_grads(model, call):
    model.zero_grad()
    logits = call()
    logits.square().sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
def test_pytorch_packed_rows_give_the_padded_logits_and_gradients(padded_batch, count_packings, norm_first):
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    model = Transformer(tiny_config(norm_first=norm_first)).eval()
    results = []
    for pack in (True, False):
        model.pack_rows = pack
        results.append(_logits_and_grads(model, lambda: model(src, tgt, logits_mask=labelled)))
    assert len(count_packings) == 1  # only the first call packed
    assert results[0][0].shape == (int(labelled.sum()), 30)
    _assert_same(*results)


def test_pytorch_packs_only_the_training_call_and_never_while_tracing(padded_batch, count_packings):
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    model(src, tgt)  # all logits (evaluation, decoding): the padded path
    assert not count_packings
    with capture(model, "*.ffn.*") as cache:  # a hook listens: it must see (B, T, ...) tensors
        traced = model(src, tgt, logits_mask=labelled)
    assert not count_packings
    assert cache["encoder.0.ffn.out"].shape[:2] == src.shape
    torch.testing.assert_close(traced, model(src, tgt, logits_mask=labelled), atol=1e-5, rtol=1e-5)
    assert len(count_packings) == 1


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hf_packed_rows_give_the_padded_and_the_pytorch_results(padded_batch, count_packings, attn):
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    reference = Transformer(tiny_config()).eval()
    reference.pack_rows = False
    expected = _logits_and_grads(reference, lambda: reference(src, tgt, logits_mask=labelled))
    model = pytorch_to_hf(reference).eval()
    model.set_attn_implementation(attn)
    results = []
    for pack in (True, False):
        model.pack_rows = pack
        call = lambda: (
            model(input_ids=src, decoder_input_ids=tgt, logits_mask=labelled, use_cache=False).logits
        )
        results.append(_logits_and_grads(model, call))
    assert len(count_packings) == 1
    _assert_same(*results)
    torch.testing.assert_close(results[0][0], expected[0], atol=1e-5, rtol=1e-5)


def test_hf_does_not_pack_under_forward_hooks_or_when_asked_for_internals(padded_batch, count_packings):
    from huggingface_version.convert import pytorch_to_hf
    from huggingface_version.hooks import record_activations
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    model = pytorch_to_hf(Transformer(tiny_config())).eval()
    with record_activations(model, "*.ffn.*") as cache:
        model(input_ids=src, decoder_input_ids=tgt, logits_mask=labelled, use_cache=False)
    assert cache and not count_packings
    out = model(input_ids=src, decoder_input_ids=tgt, logits_mask=labelled, output_hidden_states=True)
    assert out.encoder_hidden_states[0].shape[:2] == src.shape and not count_packings


def test_both_trainers_take_the_packed_path(tmp_path, count_packings, single_thread):
    """A real training step of each version packs its batches (and still learns: the loss falls)."""
    from huggingface_version.train import train_huggingface
    from pytorch_version.train import train

    settings = {**COPY_RUN, "epochs": 2, "train_size": 256, "eval_size": 32, "output_dir": str(tmp_path)}
    summary = train(RunConfig(**settings))
    batches = 256 // COPY_RUN["batch_size"] * 2
    assert len(count_packings) == batches
    history = [json.loads(line) for line in (tmp_path / "results_pytorch/logs/metrics.jsonl").open()]
    assert summary["last_epoch"]["eval_loss"] < history[0]["eval_loss"] - 0.3
    count_packings.clear()
    train_huggingface(RunConfig(**{**settings, "version": "huggingface"}))
    assert len(count_packings) == batches
