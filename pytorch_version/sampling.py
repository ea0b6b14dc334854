"""Continuing a text with a decoder-only model (GPT): greedy or sampled, over a KV cache.

One step: the logits of the next token -> rule out PAD and BOS (never outputs) -> pick one.
Picking it:

    greedy        the most likely token (do_sample=False)
    temperature   logits / T: T < 1 sharpens the distribution, T > 1 flattens it
    top-k         only the k most likely tokens keep their probability (Fan et al. 2018)
    top-p         nucleus sampling (Holtzman et al. 2019): the smallest set of most likely tokens
                  whose probability reaches p; the rest of the tail is cut off. The most likely
                  token is always in it, so even a tiny p leaves one token: greedy.

then draw from what is left, renormalised. The filters apply in that order (as transformers does).

The cache: the prompt is read once (the "prefill": `forward_tokens(prompt, cache)` fills the
cache with its keys and values), then each step feeds only the token just chosen.

The context: the model's position table covers `config.max_position` positions, the longest
sequence it was trained on. A longer prompt keeps its last `max_position` tokens (with a
warning). When the text being written reaches the context, nanoGPT crops it to its last
`block_size` tokens and reads them again from scratch, at every step. With a cache that would be
a full prefill per token, so here the crop keeps only the last half of the context (`crop_to`)
and prefills the cache from it: the next `max_position - crop_to` tokens are cheap cached steps
again, and a prefill costs about as much as the steps it replaces, whatever the length of the
output. The price: right after a crop the model sees half a context, not a full one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

logger = logging.getLogger(__name__)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """(B, V) logits -> the same with temperature applied and the filtered-out tokens at -inf."""
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # the k-th largest logit of each row
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # the probability of the tokens more likely than this one
        drop_sorted = before >= top_p  # the set already reached p without it (never the first token)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
               generator: torch.Generator | None) -> torch.Tensor:  # fmt: skip
    """(B, V) logits with the forbidden tokens at -inf -> (B,) next tokens."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on the model's device, seeded; None: torch's global random state."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(seed)


def sample(model, prompt_ids: list[int], max_new_tokens: int, do_sample: bool = True,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           seed: int | torch.Generator | None = None, eos_id: int | None = None,
           never: Iterable[int] = (), crop_to: int | None = None) -> list[int]:  # fmt: skip
    """Continue `prompt_ids` by up to `max_new_tokens` tokens; returns the new ids only.

    Args:
        model: a decoder-only model with `forward_tokens(tokens, cache)`, `new_cache()` and a
            config with pad_id, bos_id and max_position (pytorch_version.gpt.GPT); it is used as
            it is (put it in eval mode first).
        do_sample: draw the next token (temperature, top_k, top_p apply); False: the most likely.
        seed: an int for a fresh generator, a torch.Generator to draw from, or None (torch's
            global random state).
        eos_id: stop after this token (it ends the returned ids); None: always `max_new_tokens`.
        never: more ids that must never be output, besides PAD and BOS (e.g. EOS for a language
            model whose data has none).
        crop_to: the tokens kept when the text reaches the context; default half the context.
    """
    return sample_batch(model, [prompt_ids], max_new_tokens, do_sample, temperature, top_k, top_p, seed,
                        eos_id, never, crop_to)[0]  # fmt: skip


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], max_new_tokens: int, do_sample: bool = True,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | torch.Generator | None = None, eos_id: int | None = None,
                 never: Iterable[int] = (), crop_to: int | None = None) -> list[list[int]]:  # fmt: skip
    """`sample` for several prompts at once, one row each: the steps cost about what one row's do (a step
    of a small model is bound by reading its weights, not by the rows). Shorter prompts are padded after
    their end; the model numbers each row's real tokens and no query looks at a pad, so a row continues
    as it would alone (its draws come from the shared generator, so they differ from a run alone). A row
    that wrote `eos_id` is finished: PAD after it, and its list ends with the EOS."""
    if not prompts or not all(prompts):
        raise ValueError("every prompt must hold at least one token")
    if not temperature > 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature > 0, 0 < top_p <= 1 and top_k >= 0; got {temperature}, "
                         f"{top_p} and {top_k}")  # fmt: skip
    cfg = model.config
    context_size = cfg.max_position
    keep = max(1, min(crop_to or context_size // 2, context_size - 1))  # room for the next token
    device = next(model.parameters()).device
    generator = _generator(seed, device)
    banned = torch.tensor(sorted({cfg.pad_id, cfg.bos_id, *never}), device=device)
    contexts = [list(p) for p in prompts]
    if max(len(c) for c in contexts) > context_size:
        logger.warning("prompt of %d tokens: keeping its last %d, the model's context",
                       max(len(c) for c in contexts), context_size)  # fmt: skip
        contexts = [c[-context_size:] for c in contexts]

    def prefill(rows: list[list[int]]):
        """A new cache holding `rows` (padded after their ends); the logits after each row's last token."""
        cache = model.new_cache()
        tokens = torch.full((len(rows), max(map(len, rows))), cfg.pad_id, dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row, device=device)
        logits = model.forward_tokens(tokens, cache)  # (B, T, V)
        last = torch.tensor([len(row) - 1 for row in rows], device=device)
        return cache, logits[torch.arange(len(rows), device=device), last]

    cache, logits = prefill(contexts)
    new: list[list[int]] = [[] for _ in contexts]
    finished = torch.zeros(len(contexts), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        logits = logits.index_fill(1, banned, float("-inf"))
        token = pick_token(logits, do_sample, temperature, top_k, top_p, generator).masked_fill(
            finished, cfg.pad_id
        )
        for i, t in enumerate(token.tolist()):
            if not finished[i]:
                new[i].append(t)
                contexts[i].append(t)
        if eos_id is not None:
            finished |= token == eos_id
        if bool(finished.all()) or step + 1 == max_new_tokens:
            break
        if len(cache) >= context_size:  # no position left for `token`: crop and read again
            contexts = [c[-keep:] for c in contexts]
            cache, logits = prefill(contexts)
        else:
            logits = model.forward_tokens(token[:, None], cache)[:, -1]
    return new
