"""`--debug` for the from-scratch model: trace one example through a forward pass."""

from __future__ import annotations

import torch

from utils.trace_printer import format_trace, parse_selection


@torch.no_grad()
def trace_example(model, src: torch.Tensor, tgt_in: torch.Tensor, tokenizer, layers="all", heads="0") -> str:
    """The step-by-step trace of the first row of a batch, padding cut off, in eval mode."""
    pad = model.config.pad_id
    src = src[:1, : int((src[0] != pad).sum())]
    tgt = tgt_in[:1, : int((tgt_in[0] != pad).sum())]
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.run_with_cache(src, tgt)
    finally:
        model.train(was_training)
    n = model.config.num_layers
    return format_trace(
        cache,
        tokenizer.tokens(src[0]),
        tokenizer.tokens(tgt[0]),
        n,
        layers=parse_selection(layers, n, "layers"),
        heads=parse_selection(heads, model.config.num_heads, "heads"),
        predicted=tokenizer.tokens(logits[0].argmax(-1)),
    )
