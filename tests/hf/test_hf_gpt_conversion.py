"""pytorch_version's GPT <-> the HF GPT through GPT_KEY_TABLE: same logits, same decoding; and HF's own
`generate` (cache, beams, sampling) on it.

pytorch_version's toy-task format is prompt (no EOS), BOS, completion, EOS: greedy_decode(model, src, n)
reads the (right-padded) prompt, then BOS, and rules out PAD and BOS. In Hugging Face terms the input
is prompt + [BOS], left-padded, with an attention mask; the generation defaults suppress PAD and BOS.
"""

from __future__ import annotations

import pytest
import torch

from huggingface_version import GPT_KEY_TABLE, TutorialGPTForCausalLM, hf_to_pytorch, pytorch_to_hf
from huggingface_version.convert import convert_key
from pytorch_version.decoding import greedy_decode
from pytorch_version.gpt import GPT
from tests.factory import tiny_gpt, tiny_gpt_twins
from utils.fast.packing import readable_logits

pytestmark = pytest.mark.usefixtures("single_thread")
VARIANTS = [{}, {"positions": "learned"}, {"positions": "sinusoidal"},
            {"norm_first": False, "activation": "relu"}, {"tie_output": False, "init": "xavier"}]  # fmt: skip
SRC = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])  # a right-padded prompt, as pytorch_version batches them
TGT = torch.tensor([[1, 11, 12], [1, 13, 0]])


def sharp_gpt(seed: int = 2, std: float = 0.5, **overrides) -> GPT:
    """A random GPT whose greedy outputs branch and, for most prompts, stop at EOS."""
    model = tiny_gpt(seed, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


def prompts(n: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (n, 7), generator=g)
    src[::3, 4:] = 0  # every third prompt is shorter (right-padded, pytorch_version's layout)
    return src


def hf_inputs(src: torch.Tensor, bos: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch_version's prompts -> HF's: each row's real tokens, then BOS, left-padded; and the mask."""
    rows = [[t for t in row if t != 0] + [bos] for row in src.tolist()]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def test_key_table_covers_every_parameter_both_ways():
    for overrides in VARIANTS:
        pt, hf = tiny_gpt_twins(**overrides)
        pt_keys, hf_keys = set(pt.state_dict()), set(hf.state_dict())
        assert {convert_key(k, arch="gpt") for k in pt_keys} == hf_keys
        assert {convert_key(k, to_hf=False, arch="gpt") for k in hf_keys} == pt_keys
    assert ("decoder.layers.{i}.self_attn", "model.layers.{i}.self_attn") in GPT_KEY_TABLE
    with pytest.raises(KeyError, match="no row of GPT_KEY_TABLE covers"):
        convert_key("decoder.layers.0.cross_attn.q_proj.weight", arch="gpt")


@pytest.mark.parametrize("overrides", VARIANTS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_converted_weights_give_the_same_logits_both_ways(overrides, attn):
    pt = sharp_gpt(std=0.2, **overrides)
    hf = pytorch_to_hf(pt, attn_implementation=attn).eval()
    assert type(hf) is TutorialGPTForCausalLM
    ids = torch.cat([SRC, TGT], dim=1)  # pads between prompt and target: masked, not numbered
    with torch.no_grad():
        expected = pt(SRC, TGT)
        got = hf(input_ids=ids, attention_mask=(ids != 0).long()).logits[:, SRC.size(1) :]
        packed_seam = readable_logits(hf, SRC, TGT, SRC != 0, TGT != 0)  # what a trainer's step reads
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed_seam, expected, rtol=0, atol=1e-5)

    back = hf_to_pytorch(hf).eval()  # and back: bit-for-bit the weights, the same logits
    assert type(back) is GPT and back.config == pt.config
    for name, tensor in pt.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    with torch.no_grad():
        hf_ids = torch.randint(4, 30, (2, 11), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(
            back.forward_tokens(hf_ids), hf(input_ids=hf_ids).logits, rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("positions", ["rotary", "learned", "sinusoidal"])
def test_greedy_generate_gives_greedy_decodes_tokens(positions):
    pt = sharp_gpt(positions=positions)
    hf = pytorch_to_hf(pt).eval()
    src = prompts()
    expected = greedy_decode(pt, src, 12)
    assert (expected == 2).any(1).any()  # some stop at EOS (then PAD), the others run out of room
    ids, mask = hf_inputs(src)
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(out[:, : ids.size(1)], ids)  # the prompt comes back first
    got = out[:, ids.size(1) :]
    width = max(expected.size(1), got.size(1))
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.size(1)))  # PAD after EOS in both
    assert torch.equal(pad(got), pad(expected))
    assert not torch.isin(got, torch.tensor([1])).any()  # BOS is never generated


def test_cached_and_uncached_generate_agree_greedy_beams_and_sampling():
    hf = pytorch_to_hf(sharp_gpt()).eval()
    ids, mask = hf_inputs(prompts(12))
    for kwargs in ({"num_beams": 1}, {"num_beams": 4, "length_penalty": 0.6}):
        cached = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, use_cache=True, **kwargs)
        full = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, use_cache=False, **kwargs)
        assert torch.equal(cached, full), kwargs
    sampled = []
    for use_cache in (True, True, False):  # the same seed: the same tokens, with the cache or without
        torch.manual_seed(3)
        sampled.append(hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=True,
                                   top_k=5, use_cache=use_cache))  # fmt: skip
    assert torch.equal(sampled[0], sampled[1]) and torch.equal(sampled[0], sampled[2])
    torch.manual_seed(4)
    other = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=5)
    assert not torch.equal(other, sampled[0])


def test_beam_search_returns_each_prompts_beams_sorted_best_first():
    pt = sharp_gpt()
    hf = pytorch_to_hf(pt).eval()
    ids, mask = hf_inputs(prompts(8))
    K = 4
    out = hf.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=K, num_return_sequences=K,
        length_penalty=0.0, output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    scores = out.sequences_scores.view(8, K)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted, best first
    assert all(len(set(map(tuple, out.sequences.view(8, K, -1)[b].tolist()))) == K for b in range(8))
    # length_penalty 0: a beam's score is its summed log-probability, which the pytorch twin confirms
    width = ids.size(1)
    for b in range(8):
        best = out.sequences[b * K, width:].tolist()
        best = best[: best.index(2) + 1] if 2 in best else best
        logits = pt(ids[b : b + 1, mask[b].bool()][:, :-1], torch.tensor([[1, *best[:-1]]]))
        logprob = logits.log_softmax(-1)[0, torch.arange(len(best)), torch.tensor(best)].sum()
        torch.testing.assert_close(logprob, scores[b, 0], rtol=1e-4, atol=1e-4)
