"""pytorch_version <-> huggingface_version through the key table: same logits, same decoding."""

from __future__ import annotations

import pytest
import torch

from huggingface_version import KEY_TABLE, hf_to_pytorch, pytorch_to_hf
from huggingface_version.convert import convert_key
from pytorch_version.decoding import beam_search, greedy_decode, length_penalty
from pytorch_version.model import Transformer
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")
VARIANTS = [{}, {"norm_first": True}, {"share_embeddings": True}, {"tie_output": False}]


def sharp_pytorch_model(std: float = 0.5, **overrides) -> Transformer:
    """A random model whose greedy and beam outputs branch and stop (xavier init emits one token)."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


def sources(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (n, 7), generator=g)
    src[::3, 5:] = 0  # every third source is padded
    return src


def until_eos(row: list[int], eos: int = 2) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@torch.no_grad()
def sequence_logprob(model: Transformer, src: torch.Tensor, outputs: list[list[int]]) -> torch.Tensor:
    """Sum of log p(y_t | y_<t, x) over each output (cut at EOS), under the pytorch model."""
    scores = []
    for i, seq in enumerate(outputs):
        tgt_in = torch.tensor([[model.config.bos_id, *seq[:-1]]])
        logprobs = model(src[i : i + 1], tgt_in).log_softmax(-1)[0]
        scores.append(logprobs[torch.arange(len(seq)), torch.tensor(seq)].sum())
    return torch.stack(scores)


def test_key_table_covers_every_parameter_both_ways():
    for overrides in VARIANTS:
        pt = Transformer(tiny_config(**overrides))
        hf = pytorch_to_hf(pt)
        pt_keys, hf_keys = set(pt.state_dict()), set(hf.state_dict())
        assert {convert_key(k) for k in pt_keys} == hf_keys
        assert {convert_key(k, to_hf=False) for k in hf_keys} == pt_keys
    assert ("decoder.layers.{i}.cross_attn", "model.decoder.layers.{i}.encoder_attn") in KEY_TABLE
    with pytest.raises(KeyError, match="no row of KEY_TABLE covers"):
        convert_key("encoder.layers.0.mystery.weight")


@pytest.mark.parametrize("overrides", VARIANTS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_converted_weights_give_the_same_logits(batch, overrides, attn):
    src, tgt = batch
    pt = sharp_pytorch_model(0.2, **overrides)
    hf = pytorch_to_hf(pt, attn_implementation=attn).eval()
    with torch.no_grad():
        expected = pt(src, tgt)
        got = hf(input_ids=src, decoder_input_ids=tgt).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    back = hf_to_pytorch(hf).eval()  # and back: bit-for-bit the original weights
    for name, tensor in pt.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("std", [0.3, 0.5, 1.0])
def test_greedy_outputs_are_identical(std):
    pt = sharp_pytorch_model(std)
    hf = pytorch_to_hf(pt).eval()
    src = sources()
    expected = greedy_decode(pt, src, 12)
    got = hf.generate(src, max_new_tokens=12)
    assert got[:, 0].eq(1).all()  # HF returns the decoder start (BOS) first
    width = max(expected.size(1), got.size(1) - 1)
    pad = lambda t, n: torch.nn.functional.pad(t, (0, n - t.size(1)))  # PAD after EOS in both
    assert torch.equal(pad(got[:, 1:], width), pad(expected, width))


def test_beam_search_without_length_penalty_agrees():
    """alpha 0 / length_penalty 0: both rank by the summed log-probability; same beams, same scores."""
    pt = sharp_pytorch_model(0.5)
    hf = pytorch_to_hf(pt).eval()
    src = sources()
    ours = beam_search(pt, src, 4, 12, alpha=0.0)
    theirs = hf.generate(
        src, max_new_tokens=12, num_beams=4, length_penalty=0.0, early_stopping="never",
        output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    assert [until_eos(r) for r in ours.best.tolist()] == [until_eos(r[1:]) for r in theirs.sequences.tolist()]
    torch.testing.assert_close(theirs.sequences_scores, ours.scores[:, 0], rtol=1e-5, atol=1e-5)


def test_beam_search_with_length_penalty_returns_valid_high_scoring_beams():
    """alpha 0.6: GNMT ((5 + |Y|) / 6)^alpha in pytorch_version, |Y|^0.6 in HF: the rankings may
    differ, but each side returns a finished beam whose score is what its convention says, and
    no worse than a finished greedy output under that convention."""
    pt = sharp_pytorch_model(0.5)
    hf = pytorch_to_hf(pt).eval()
    src = sources()
    greedy = [until_eos(r) for r in greedy_decode(pt, src, 12).tolist()]
    ours = [until_eos(r) for r in beam_search(pt, src, 4, 12, alpha=0.6).best.tolist()]
    out = hf.generate(
        src, max_new_tokens=12, num_beams=4, length_penalty=0.6, early_stopping=True,
        output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    theirs = [until_eos(r[1:]) for r in out.sequences.tolist()]
    lengths = lambda seqs: torch.tensor([len(s) for s in seqs])
    hf_score = lambda seqs: sequence_logprob(pt, src, seqs) / lengths(seqs) ** 0.6
    pt_score = lambda seqs: sequence_logprob(pt, src, seqs) / length_penalty(lengths(seqs), 0.6)
    torch.testing.assert_close(hf_score(theirs), out.sequences_scores, rtol=1e-4, atol=1e-4)
    done = torch.tensor([s[-1] == 2 for s in greedy])  # greedy outputs that are finished hypotheses
    assert done.float().mean() > 0.8
    assert (hf_score(theirs) >= hf_score(greedy) - 1e-4)[done].all()
    assert (pt_score(ours) >= pt_score(greedy) - 1e-4)[done].all()
    assert all(s[-1] == 2 or len(s) == 12 for s in theirs + ours)  # finished, or out of room
    agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    assert agree >= 0.8, f"only {agree:.0%} of the best beams agree"
