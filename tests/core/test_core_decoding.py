"""Greedy decoding and beam search: the KV cache changes nothing, beams are ranked as documented.

Two models: a random one (it rarely stops, so every step runs) and the copy-task model of
the shared `copy_run` fixture (it stops at different lengths, so finished rows and beams are
exercised).
"""

from __future__ import annotations

import pytest
import torch

from pytorch_version import decoding
from pytorch_version.attention import KVCache
from pytorch_version.decoding import beam_search, generate, greedy_decode, length_penalty
from pytorch_version.inference import load_for_inference, translate
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.data.tasks import pad_batch

pytestmark = pytest.mark.usefixtures("single_thread")

PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def random_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config()).eval()


@pytest.fixture(scope="module")
def copy_model(copy_run):
    _, _, out = copy_run
    model, tokenizer, _ = load_for_inference(out / "checkpoints" / "best_model.pt")
    return model, tokenizer


def _random_src(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 30, (4, 7), generator=g)
    src[0, 5:] = PAD
    src[3, 2:] = PAD
    return src


def _copy_src(tokenizer, texts=("ab", "xyz", "hell", "qz", "mnop", "cat")) -> torch.Tensor:
    return pad_batch([tokenizer.encode(t) for t in texts], tokenizer.pad_id)


def _models_and_sources(random_model, copy_model):
    model, tokenizer = copy_model
    return [(random_model, _random_src()), (model, _copy_src(tokenizer))]


def test_copy_model_stops_at_different_lengths(copy_model):
    """The premise of the finished-row tests below: EOS comes at different steps (lengths 2-4
    are the training range)."""
    model, tokenizer = copy_model
    out = greedy_decode(model, _copy_src(tokenizer), 20)
    eos_at = [(row == EOS).nonzero()[0].item() for row in out]
    assert len(set(eos_at)) >= 3, eos_at
    assert sum(tokenizer.decode(row) == t for row, t in zip(out, ("ab", "xyz", "hell"))) >= 2


def test_greedy_cached_equals_uncached(random_model, copy_model):
    for model, src in _models_and_sources(random_model, copy_model):
        cached = greedy_decode(model, src, 40, use_cache=True)  # past the cache's first 16 positions
        full = greedy_decode(model, src, 40, use_cache=False)
        assert torch.equal(cached, full)


def test_cached_steps_give_the_logits_of_the_full_forward(random_model):
    """Step by step, 40 positions: the KV cache's buffer grows twice (16 -> 34 -> 70) on the way."""
    src = _random_src()
    src_mask = random_model.src_mask(src)
    memory = random_model.encode(src, src_mask)
    cache = KVCache()
    ys = torch.randint(4, 30, (src.size(0), 40), generator=torch.Generator().manual_seed(3))
    ys[:, 0] = BOS
    with torch.no_grad():
        full = random_model.decode(ys, memory, src_mask)  # (B, 40, V), no cache
        for t in range(40):
            step = random_model.decode(ys[:, t : t + 1], memory, src_mask, cache)[:, -1]
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)
    assert len(cache) == 40


def test_greedy_matches_step_by_step_argmax_of_the_full_forward(random_model):
    """Greedy decoding, spelled out with teacher-forced forwards."""
    src = _random_src()
    out = greedy_decode(random_model, src, 8)
    ys = torch.full((src.size(0), 1), BOS)
    for _ in range(8):
        logits = random_model(src, ys)[:, -1]
        logits[:, [PAD, BOS]] = float("-inf")
        ys = torch.cat([ys, logits.argmax(-1, keepdim=True)], dim=1)
    expected = []
    for row in ys[:, 1:].tolist():  # PAD after the first EOS
        end = row.index(EOS) + 1 if EOS in row else len(row)
        expected.append(row[:end] + [PAD] * (len(row) - end))
    assert torch.equal(out, torch.tensor(expected)[:, : out.size(1)])


def test_greedy_output_format(copy_model):
    model, tokenizer = copy_model
    out = greedy_decode(model, _copy_src(tokenizer), 6)
    assert out.dtype == torch.long and out.size(1) <= 6
    for row in out.tolist():
        first_eos = row.index(EOS) if EOS in row else len(row)
        assert PAD not in row[:first_eos] and BOS not in row
        assert all(t == PAD for t in row[first_eos + 1 :]), f"tokens after EOS: {row}"


def test_decoding_a_batch_equals_decoding_each_input_alone(copy_model, random_model):
    model, tokenizer = copy_model
    texts = ("ab", "xyz", "hell", "q")
    batch = _copy_src(tokenizer, texts)
    for m, src in ((model, batch), (random_model, _random_src())):
        together = greedy_decode(m, src, 10)
        beams_together = beam_search(m, src, 3, 10).best
        for i in range(src.size(0)):
            alone_src = src[i : i + 1, : int((src[i] != PAD).sum())]
            alone = greedy_decode(m, alone_src, 10)[0]
            assert torch.equal(together[i, : alone.size(0)], alone)
            assert (together[i, alone.size(0) :] == PAD).all()
            beam_alone = beam_search(m, alone_src, 3, 10).best[0]
            assert torch.equal(beams_together[i, : beam_alone.size(0)], beam_alone)


@pytest.mark.parametrize("beam_size", [2, 4])
def test_beam_search_cached_equals_uncached(random_model, copy_model, beam_size):
    for model, src in _models_and_sources(random_model, copy_model):
        cached = beam_search(model, src, beam_size, 24, use_cache=True)  # the cache's buffer grows
        full = beam_search(model, src, beam_size, 24, use_cache=False)
        assert torch.equal(cached.sequences, full.sequences)
        torch.testing.assert_close(cached.scores, full.scores, atol=1e-5, rtol=0)


def test_beam_size_one_is_greedy(random_model, copy_model):
    for model, src in _models_and_sources(random_model, copy_model):
        beams = beam_search(model, src, 1, 12)
        assert beams.sequences.shape[:2] == (src.size(0), 1)
        assert torch.equal(beams.best, greedy_decode(model, src, 12))


def _sequence_logprob(model: Transformer, src: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each sequence up to and including EOS, as beam search scores it."""
    tgt_in = torch.cat([torch.full((seq.size(0), 1), BOS), seq[:, :-1]], dim=1)
    logprobs = model(src, tgt_in).log_softmax(-1).gather(-1, seq[..., None])[..., 0]
    return logprobs.masked_fill(seq == PAD, 0.0).sum(-1)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_scores_are_sorted_and_equal_log_probability_over_length_penalty(copy_model, alpha):
    model, tokenizer = copy_model
    src = _copy_src(tokenizer)
    K = 4
    result = beam_search(model, src, K, 12, alpha=alpha)
    assert result.sequences.shape[:2] == (src.size(0), K) and result.scores.shape == (src.size(0), K)
    assert torch.all(result.scores[:, :-1] >= result.scores[:, 1:]), "beams not sorted best first"
    for k in range(K):
        seq = result.sequences[:, k]
        lengths = (seq != PAD).sum(-1)
        expected = _sequence_logprob(model, src, seq) / length_penalty(lengths, alpha)
        torch.testing.assert_close(result.scores[:, k], expected, atol=1e-4, rtol=1e-4)
    for b in range(src.size(0)):  # the beams of one input are different sequences
        assert len({tuple(row) for row in result.sequences[b].tolist()}) == K


def test_beam_search_finds_at_least_the_greedy_probability(random_model):
    """Beam search without length penalty can only improve on greedy's sequence log-probability."""
    src = _random_src()
    greedy = greedy_decode(random_model, src, 6)
    best = beam_search(random_model, src, 4, 6, alpha=0.0)
    greedy_score = _sequence_logprob(random_model, src, greedy)
    assert torch.all(best.scores[:, 0] >= greedy_score - 1e-5)


def test_generate_dispatches_on_beam_size(random_model, monkeypatch):
    src = _random_src()
    assert torch.equal(generate(random_model, src, 9), greedy_decode(random_model, src, 9))
    assert torch.equal(generate(random_model, src, 9, beam_size=3), beam_search(random_model, src, 3, 9).best)

    calls = []
    real_beam_search = decoding.beam_search

    def spy(*args, **kwargs):
        calls.append((args[2:], kwargs))
        return real_beam_search(*args, **kwargs)

    monkeypatch.setattr(decoding, "beam_search", spy)
    generate(random_model, src, 5, beam_size=1)
    assert calls == []
    generate(random_model, src, 5, beam_size=3, alpha=0.2, use_cache=False)
    assert calls == [((3, 5, 0.2, False), {})]


def test_length_penalty_values():
    lengths = torch.tensor([1, 7, 19])
    torch.testing.assert_close(length_penalty(lengths, 0.0), torch.ones(3))
    torch.testing.assert_close(length_penalty(lengths, 1.0), torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(length_penalty(lengths, 0.6), torch.tensor([1.0, 2.0**0.6, 4.0**0.6]))
    assert length_penalty(lengths, 0.6).dtype == torch.float32  # integer lengths are promoted


def test_translate_returns_text_and_rejects_empty_input(copy_model):
    from utils.runtime.config import UserError

    model, tokenizer = copy_model
    texts = ["abc", "wxyz", "qz", "mno"]
    src = _copy_src(tokenizer, texts)
    for beam_size in (1, 3):
        outputs = translate(model, tokenizer, texts, beam_size=beam_size)
        assert outputs == [
            tokenizer.decode(row) for row in generate(model, src, src.size(1) + 10, beam_size).tolist()
        ]
        assert sum(o == t for o, t in zip(outputs, texts)) >= 3, outputs  # the model learnt to copy
    assert len(translate(model, tokenizer, ["abcd"], max_length=2)[0]) == 2
    with pytest.raises(UserError, match="empty"):
        translate(model, tokenizer, ["   "])
