"""pytorch_version/sampling.py: greedy and sampled continuation over a KV cache.

The reference here re-reads the whole text at every step (no cache), as nanoGPT's `generate` does,
and filters the logits with its own code; the cached `sample` must choose the same tokens, also
when the same generator draws for both.
"""

from __future__ import annotations

import logging

import pytest
import torch

from pytorch_version.sampling import filter_logits, sample
from tests.factory import tiny_gpt
from utils.fast import SpeedUps

PROMPT = [5, 9, 7, 12, 4]


def _masked_last_logits(model, tokens: list[int]) -> torch.Tensor:
    """(V,) logits of the token after `tokens` from a full forward without cache, PAD and BOS ruled out."""
    logits = model.forward_tokens(torch.tensor([tokens]))[0, -1].float()
    logits[[model.config.pad_id, model.config.bos_id]] = float("-inf")
    return logits


def _reference_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The textbook filters, written apart from sampling.py: (V,) logits -> (V,) probabilities."""
    logits = logits / temperature
    if top_k:
        kept = set(logits.topk(top_k).indices.tolist())
        logits = torch.tensor([x if i in kept else float("-inf") for i, x in enumerate(logits.tolist())])
    probs = logits.softmax(-1)
    if top_p < 1:
        kept, total = [], 0.0
        for i in probs.argsort(descending=True).tolist():  # most likely first, until the mass reaches p
            kept.append(i)
            total += float(probs[i])
            if total >= top_p:
                break
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[kept] = True
        probs = probs.masked_fill(~mask, 0.0)
        probs = probs / probs.sum()
    return probs


@torch.no_grad()
def _uncached(model, prompt, steps, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    tokens, new = list(prompt), []
    for _ in range(steps):
        logits = _masked_last_logits(model, tokens)
        if do_sample:
            probs = _reference_probs(logits, temperature, top_k, top_p)
            token = int(torch.multinomial(probs[None], 1, generator=generator)[0, 0])
        else:
            token = int(logits.argmax())
        tokens.append(token)
        new.append(token)
    return new


@pytest.fixture(scope="module")
def model():
    return tiny_gpt()


def test_the_same_seed_gives_the_same_tokens_and_another_seed_others(model):
    first = sample(model, PROMPT, 30, seed=1)
    assert sample(model, PROMPT, 30, seed=1) == first
    assert sample(model, PROMPT, 30, seed=2) != first
    assert len(first) == 30


def test_greedy_is_the_argmax_of_the_full_forward_step_by_step(model):
    assert sample(model, PROMPT, 20, do_sample=False) == _uncached(model, PROMPT, 20, do_sample=False)


@pytest.mark.parametrize("settings", [dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-4)],
                         ids=["top_k_1", "tiny_top_p", "tiny_temperature"])  # fmt: skip
def test_the_narrowest_sampling_is_greedy(model, settings):
    greedy = sample(model, PROMPT, 20, do_sample=False)
    for seed in range(3):
        assert sample(model, PROMPT, 20, seed=seed, **settings) == greedy


def test_a_falling_temperature_approaches_greedy(model):
    greedy = sample(model, PROMPT, 12, do_sample=False)

    def agreement(temperature):
        runs = [sample(model, PROMPT, 12, temperature=temperature, seed=s) for s in range(8)]
        return sum(a == b for run in runs for a, b in zip(run, greedy)) / (8 * 12)

    hot, warm, cold = agreement(1.0), agreement(0.1), agreement(0.01)  # the logits differ by ~0.1
    assert hot <= warm <= cold == 1.0


@pytest.mark.parametrize("settings", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.5),
                                      dict(temperature=1.3, top_k=8, top_p=0.9)],
                         ids=["plain", "temperature_top_k", "top_p", "all_three"])  # fmt: skip
def test_cached_sampling_equals_the_uncached_reference_with_the_same_draws(model, settings):
    cached = sample(model, PROMPT, 25, seed=torch.Generator().manual_seed(7), **settings)
    reference = _uncached(model, PROMPT, 25, generator=torch.Generator().manual_seed(7), **settings)
    assert cached == reference


def test_the_speed_ups_cache_samples_the_same(model):
    fast = tiny_gpt(speed=SpeedUps())
    assert sample(fast, PROMPT, 20, seed=3, top_k=6) == sample(model, PROMPT, 20, seed=3, top_k=6)


def test_never_pad_or_bos_nor_the_banned_ids(model):
    cfg = model.config
    with torch.no_grad():  # make PAD, BOS and EOS the most likely tokens everywhere
        model.lm_head.weight[[cfg.pad_id, cfg.bos_id, cfg.eos_id]] *= 50
    try:
        out = sample(model, PROMPT, 40, temperature=2.0, seed=0, never=[cfg.eos_id])
        greedy = sample(model, PROMPT, 10, do_sample=False)
    finally:
        with torch.no_grad():
            model.lm_head.weight[[cfg.pad_id, cfg.bos_id, cfg.eos_id]] /= 50
    assert not {cfg.pad_id, cfg.bos_id, cfg.eos_id} & set(out)
    assert not {cfg.pad_id, cfg.bos_id} & set(greedy)


def test_it_stops_at_eos(model):
    greedy = sample(model, PROMPT, 20, do_sample=False)
    eos = greedy[4]  # pretend the fifth token ends a text
    out = sample(model, PROMPT, 20, do_sample=False, eos_id=eos)
    assert out == greedy[: greedy.index(eos) + 1]
    assert out[-1] == eos and len(out) < 20


@pytest.mark.parametrize("positions", ["rotary", "learned", "sinusoidal"])
def test_generating_past_the_context_crops_and_goes_on(positions):
    model = tiny_gpt(positions=positions, max_position=16)
    out = sample(model, PROMPT, 40, seed=0)
    assert len(out) == 40
    assert sample(model, PROMPT, 40, seed=0) == out
    greedy = sample(model, PROMPT, 40, do_sample=False)
    # until the text fills the context, the crop has not happened: the uncached reference agrees
    assert greedy[: 16 - len(PROMPT) + 1] == _uncached(model, PROMPT, 16 - len(PROMPT) + 1, do_sample=False)


def test_the_crop_keeps_the_last_tokens_and_reads_them_again():
    """After the crop the next token is the one the model gives the last `crop_to` tokens."""
    model = tiny_gpt(max_position=8)
    out = sample(model, [5, 6], 12, do_sample=False, crop_to=4)
    text = [5, 6, *out]
    # 8 positions hold the prompt and 6 tokens; the 7th new one is read from the last 4 tokens
    assert out[6] == int(_masked_last_logits(model, text[4:8]).argmax())
    assert out[:6] == _uncached(model, [5, 6], 6, do_sample=False)


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens(caplog):
    model = tiny_gpt(max_position=16)
    long_prompt = [4 + i % 20 for i in range(30)]
    with caplog.at_level(logging.WARNING, logger="pytorch_version.sampling"):
        out = sample(model, long_prompt, 1, do_sample=False)
    assert "keeping its last 16" in caplog.text
    assert out == [int(_masked_last_logits(model, long_prompt[-16:]).argmax())]


def test_filter_logits_keeps_the_smallest_set_that_reaches_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: (filter_logits(logits, top_p=p) > float("-inf"))[0].tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.79) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1e-9) == [True, False, False, False]
    assert (filter_logits(logits, top_k=2) > float("-inf"))[0].tolist() == [True, True, False, False]


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="at least one token"):
        sample(model, [], 5)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, PROMPT, 5, temperature=0.0)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_a_batch_of_ragged_prompts_continues_each_as_alone(positions):
    from pytorch_version.sampling import sample_batch

    model = tiny_gpt(positions=positions, max_position=24)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    together = sample_batch(model, prompts, 30, do_sample=False)  # past the context: crops included
    assert together == [sample(model, p, 30, do_sample=False) for p in prompts]
    eos = together[1][3]
    stopped = sample_batch(model, prompts, 30, do_sample=False, eos_id=eos)
    for row, alone in zip(stopped, together):  # each row ends at its first EOS, or runs the whole length
        assert row == (alone[: alone.index(eos) + 1] if eos in alone else alone)
