"""Reading attention matrices out of an activation cache, for figures and reports.

Cache names follow ../shared/DESIGN.md, e.g. `decoder.1.cross_attn.weights` with shape
(batch, heads, queries, keys). An attention *kind* names one of the paper's three attention
types: encoder self-attention, masked decoder self-attention, and cross-attention. A decoder-only
model (GPT) has only `decoder_self`, over the prompt and the completion as one sequence.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from utils.observe.family import ENCODER_DECODER, Family

# kind -> (stack, attention module) in cache names, e.g. decoder.1.cross_attn.weights
ATTENTION_KINDS = {
    "encoder_self": ("encoder", "self_attn"),
    "decoder_self": ("decoder", "self_attn"),
    "decoder_cross": ("decoder", "cross_attn"),
}


def canonical_kind(kind: str) -> str:
    """'cross' -> 'decoder_cross', 'encoder' -> 'encoder_self', 'decoder' -> 'decoder_self'."""
    kind = {"cross": "decoder_cross", "encoder": "encoder_self", "decoder": "decoder_self"}.get(kind, kind)
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention kind must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
    return kind


def stack_and_module(kind: str) -> tuple[str, str]:
    return ATTENTION_KINDS[canonical_kind(kind)]


def attention_layers(cache: dict, stack: str, module: str) -> list[int]:
    """Layer indices whose attention weights the cache holds, e.g. [0, 1]."""
    return sorted(int(m[1]) for n in cache if (m := re.match(rf"{stack}\.(\d+)\.{module}\.weights$", n)))


def layer_index(cache: dict, stack: str, module: str, layer: int) -> int:
    found = attention_layers(cache, stack, module)
    if not found:
        raise KeyError(f"no {stack} {module} weights in the cache; capture '*.weights' with run_with_cache")
    return found[layer]  # negative layers count from the top


def attention_weights(cache: dict, kind: str = "decoder_cross", layer: int = -1, head=0, example=0):
    """One (T, S) attention matrix as numpy; `head=None` averages the heads."""
    stack, module = stack_and_module(kind)
    w = cache[f"{stack}.{layer_index(cache, stack, module, layer)}.{module}.weights"][example]  # (H, T, S)
    w = torch.as_tensor(w).float().cpu()
    return (w.mean(0) if head is None else w[head]).numpy()


def axes_tokens(kind: str, src_tokens, tgt_tokens, family: Family = ENCODER_DECODER):
    """(query labels, key labels) of an attention kind; a decoder-only model's decoder positions are
    the prompt's tokens followed by the target's (utils.observe.family)."""
    return family.axes_tokens(*stack_and_module(kind), src_tokens, tgt_tokens)


def trim(w: np.ndarray, rows, cols) -> np.ndarray:
    """Drop padded rows/columns: keep as many as there are tokens (all when tokens are None)."""
    return w[: len(rows) if rows is not None else None, : len(cols) if cols is not None else None]
