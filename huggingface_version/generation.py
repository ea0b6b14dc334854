"""Continuing a text with the Hugging Face GPT: `generate` with the sampling flags, past its context.

The twin of pytorch_version/sampling.py, on transformers' own `generate` (greedy, or sampling with
temperature, top-k and top-p, over a DynamicCache). Two things `generate` does not do by itself:

    the seed      --seed gives the same text: the draws come from torch's global generator, so it is
                  seeded inside `torch.random.fork_rng`, and training's random state is left as it was
    the context   the position table covers `max_position` tokens; when the text reaches it, the last
                  half is kept and `generate` goes on from there, as pytorch_version.sampling crops
                  (the model then sees half a context, not a full one)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

logger = logging.getLogger(__name__)


def sampling_settings(cfg) -> dict:
    """`generate`'s arguments for --do_sample / --temperature / --top_k / --top_p (top_k 0: no limit)."""
    if not cfg.do_sample:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p}


@torch.no_grad()
def continue_ids(model, prompt_ids: list[int], max_new_tokens: int, sampling: dict, seed: int | None = None,
                 stop_at_eos: bool = True, never: Iterable[int] = ()) -> list[int]:  # fmt: skip
    """Up to `max_new_tokens` ids after `prompt_ids` (the prompt not included), from a
    TutorialGPTForCausalLM in eval mode. PAD and BOS are never output, nor the ids in `never`;
    `stop_at_eos`: the text ends at EOS (a toy task's GPT), else it runs to `max_new_tokens`."""
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token")
    config, device = model.config, model.device
    size = config.max_position
    keep = max(1, size // 2)
    context = list(prompt_ids)
    if len(context) > size:
        logger.warning("prompt of %d tokens: keeping its last %d, the model's context", len(context), size)
        context = context[-size:]
    suppress = sorted({config.pad_token_id, config.bos_token_id, *never})
    eos = config.eos_token_id
    new: list[int] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        while len(new) < max_new_tokens:
            if len(context) > size:  # the text has reached the context: go on from its last half
                context = context[-keep:]
            # the last new token is read by no one: the model reads at most `size` tokens
            n = min(max_new_tokens - len(new), size - len(context) + 1)
            ids = torch.tensor([context], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=0 if stop_at_eos else n, suppress_tokens=suppress,
                                 **sampling)  # fmt: skip
            step = out[0, ids.size(1) :].tolist()
            if stop_at_eos and eos in step:
                new += step[: step.index(eos) + 1]
                break
            new += step
            context += step
            if len(step) < n:  # generate stopped early
                break
    return new
