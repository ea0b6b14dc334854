"""Turning a trained model into outputs: greedy decoding and beam search.

Both run the encoder once and the decoder once per new token. With `use_cache=True`
(the default) the decoder sees only the newest token and reads earlier keys and values
from a `KVCache`; with `use_cache=False` it re-reads the whole prefix each step. The
two give the same tokens; the cache makes a step cost O(T) instead of O(T^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pytorch_version.model import Transformer


def _next_token_logprobs(model: Transformer, logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next token, with PAD and BOS ruled out: they are never outputs."""
    logprobs = logits.float().log_softmax(dim=-1)
    logprobs[:, model.config.pad_id] = float("-inf")
    logprobs[:, model.config.bos_id] = float("-inf")
    return logprobs


def _step(model, ys, memory, src_mask, cache):
    """Logits for the next position, (B, V); feeds only the last token when caching."""
    inputs = ys[:, -1:] if cache is not None else ys
    return model.decode(inputs, memory, src_mask, cache)[:, -1]


@torch.no_grad()
def greedy_decode(
    model: Transformer, src: torch.Tensor, max_new_tokens: int, use_cache: bool = True
) -> torch.Tensor:
    """Pick the most likely token at each step. Returns (B, <= max_new_tokens) ids, PAD after EOS."""
    cfg = model.config
    src_mask = model.src_mask(src)
    memory = model.encode(src, src_mask)
    ys = torch.full((src.size(0), 1), cfg.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    never = torch.tensor([cfg.pad_id, cfg.bos_id], device=src.device)  # as in _next_token_logprobs
    for _ in range(max_new_tokens):
        logits = _step(model, ys, memory, src_mask, cache)
        token = logits.index_fill(1, never, float("-inf")).argmax(dim=-1)  # argmax: no softmax needed
        token = token.masked_fill(finished, cfg.pad_id)
        ys = torch.cat([ys, token[:, None]], dim=1)
        finished |= token == cfg.eos_id
        if finished.all():
            break
    return ys[:, 1:]


@dataclass
class BeamResult:
    """Beams of each input sorted best first: `sequences` (B, K, T), `scores` (B, K)."""

    sequences: torch.Tensor
    scores: torch.Tensor  # length-normalised log-probabilities

    @property
    def best(self) -> torch.Tensor:
        return self.sequences[:, 0]


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); alpha 0 turns it off."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    beam_size: int,
    max_new_tokens: int,
    alpha: float = 0.6,
    use_cache: bool = True,
) -> BeamResult:
    """Keep the `beam_size` best prefixes per input; rank finished ones by score / length penalty.

    A finished beam (it produced EOS) stays in the beam and can only be extended by PAD at
    no cost, so its log-probability is frozen while the others keep paying for new tokens.
    """
    cfg = model.config
    B, K = src.size(0), beam_size
    src_mask = model.src_mask(src).repeat_interleave(K, dim=0)
    memory = model.encode(src.repeat_interleave(K, dim=0), src_mask)  # (B*K, S, D)
    ys = torch.full((B * K, 1), cfg.bos_id, dtype=torch.long, device=src.device)
    scores = torch.zeros(B, K, device=src.device)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one until the first step branches
    finished = torch.zeros(B * K, dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    batch_base = (torch.arange(B, device=src.device) * K)[:, None]  # (B, 1)

    for _ in range(max_new_tokens):
        logprobs = _next_token_logprobs(model, _step(model, ys, memory, src_mask, cache))
        logprobs[finished] = float("-inf")
        logprobs[finished, cfg.pad_id] = 0.0
        vocab = logprobs.size(-1)
        candidates = (scores.view(B * K, 1) + logprobs).view(B, K * vocab)
        scores, flat = candidates.topk(K, dim=1)  # (B, K)
        beam = batch_base + flat // vocab  # which row of ys each survivor extends
        token = (flat % vocab).view(-1)
        order = beam.view(-1)
        ys = torch.cat([ys[order], token[:, None]], dim=1)
        finished = finished[order] | (token == cfg.eos_id)
        if cache is not None:
            cache.reorder(order)
        if finished.all():
            break

    outputs = ys[:, 1:].view(B, K, -1)
    normalised = scores / length_penalty((outputs != cfg.pad_id).sum(-1), alpha)
    normalised, rank = normalised.sort(dim=1, descending=True)
    sequences = outputs.gather(1, rank[:, :, None].expand_as(outputs))
    return BeamResult(sequences=sequences, scores=normalised)


def generate(
    model: Transformer,
    src: torch.Tensor,
    max_new_tokens: int,
    beam_size: int = 1,
    alpha: float = 0.6,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy decoding for `beam_size` 1, beam search otherwise; returns the best (B, T) ids."""
    if beam_size == 1:
        return greedy_decode(model, src, max_new_tokens, use_cache)
    return beam_search(model, src, beam_size, max_new_tokens, alpha, use_cache).best
