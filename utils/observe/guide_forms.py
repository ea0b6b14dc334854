"""The user guide's forms of TransformerAnalyzer's calls, beside the cache-first ones.

The guide writes `analyzer.analyze_qkv_statistics(input_ids)` and
`analyzer.analyze_attention_patterns(input_ids, tokens=tokens)`: ids, and the model is run on them.
The toolkit's own code passes the cache it already made: `analyze_qkv_statistics(cache, input_ids,
target_ids, attention_mask)`. `cache_and_ids` tells the two apart by the first argument (a mapping is
a cache) and returns what either needs. Without target ids the model reads what its family reads
first: the encoder-decoder's decoder BOS alone, a GPT the ids as one sequence (no prompt), BERT or
a ViT nothing on the target side.

`tokens` label the answer (strings, for a reader): one list for both axes, or {"src": [...],
"tgt": [...]} as the toolkit's reports carry them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

IDS = ("input_ids", "target_ids", "attention_mask")


def start_id(config) -> int:
    """The id the encoder-decoder's decoder starts from (toolkit's bos_id, transformers' names)."""
    for name in ("bos_id", "decoder_start_token_id", "bos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return 1


def cache_and_ids(analyzer, first, rest: tuple, given: dict) -> tuple[dict, tuple]:
    """(cache, (input_ids, target_ids, attention_mask)) of a call in either form.

    `first` is the call's first argument, `rest` its other positional ones, `given` its keyword ids.
    A cache keeps the ids that follow it (they only say which positions are padding); ids are run.
    """
    if isinstance(first, Mapping):
        ids = dict(zip(IDS, rest, strict=False)) | {k: v for k, v in given.items() if v is not None}
        return first, tuple(ids.get(k) for k in IDS)
    names = IDS[1:]  # the guide's form: input_ids first, then target_ids, attention_mask
    ids = {"input_ids": first, **dict(zip(names, rest, strict=False))}
    ids |= {k: v for k, v in given.items() if v is not None and k != "input_ids"}
    src, tgt = model_inputs(analyzer, torch.as_tensor(first), ids.get("target_ids"))
    _, cache = analyzer.run(src, tgt)
    return cache, (src, tgt, ids.get("attention_mask"))


def model_inputs(analyzer, input_ids: torch.Tensor, target_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, tgt) the model runs on when the caller gave only `input_ids` (see the module docstring)."""
    if target_ids is not None:
        return input_ids, torch.as_tensor(target_ids)
    rows = input_ids.size(0)
    if analyzer.family.one_sequence:  # a GPT: the ids are the sequence, no prompt before them
        return input_ids[:, :0], input_ids
    if analyzer.family.name == "encoder-only":
        return input_ids, torch.zeros(rows, 0, dtype=torch.long)
    return input_ids, torch.full((rows, 1), start_id(analyzer.model.config), dtype=torch.long)


def token_axes(tokens) -> tuple[list | None, list | None]:
    """(source tokens, target tokens) from one list (both) or {"src", "tgt"}; None: not given."""
    if tokens is None:
        return None, None
    if isinstance(tokens, Mapping):
        return tokens.get("src"), tokens.get("tgt")
    return list(tokens), list(tokens)


def strongest_links(weights: torch.Tensor, rows, cols, real_rows: torch.Tensor) -> list[str]:
    """For row 0 of one head's (T, S) weights: "query token -> the key token it attends to most", per
    real query. Tokens label the positions they cover; a position beyond them is named by its number."""
    label = lambda tokens, i: str(tokens[i]) if tokens is not None and i < len(tokens) else str(i)
    best = weights.argmax(-1).tolist()
    return [f"{label(rows, i)} -> {label(cols, j)}" for i, j in enumerate(best) if bool(real_rows[i])]
