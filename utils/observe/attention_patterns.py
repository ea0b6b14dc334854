"""Naming the shape of an attention matrix: diagonal, previous-token, reversed, uniform, ...

`classify_pattern(weights)` measures one (T, S) matrix over its real queries and keys
(entropy, distance-weighted span, mass near the diagonal, on the previous key, on the
mirrored key, on the first key) and names it by the thresholds below, tested in order.
"""

from __future__ import annotations

import torch

# Thresholds of `classify_pattern`, tested in this order; "mixed" when none holds.
UNIFORM_ENTROPY = 0.9  # entropy / log(#keys) at least this: weights nearly even -> "global/uniform"
PREVIOUS_TOKEN_MASS = 0.5  # mean weight on key i-1 at least this -> "previous-token"
REVERSED_MASS = 0.5  # mean weight near key S-1-i at least this, and above the local mass -> "reversed"
LOCAL_MASS = 0.6  # mean weight near key i (|i-j| <= NEAR) at least this -> "diagonal/local"
FIRST_TOKEN_MASS = 0.5  # mean weight on key 0 at least this -> "first-token/focused"
FOCUSED_MAX = 0.7  # mean of each query's largest weight at least this: one key per query -> "focused"
NEAR = 1  # tolerance in positions for "local" and "reversed" (a source EOS shifts the mirror by one)
PATTERNS = ("global/uniform", "previous-token", "reversed/anti-diagonal", "diagonal/local",
            "first-token/focused", "mixed")  # fmt: skip
THRESHOLDS = {
    "UNIFORM_ENTROPY": UNIFORM_ENTROPY,
    "PREVIOUS_TOKEN_MASS": PREVIOUS_TOKEN_MASS,
    "REVERSED_MASS": REVERSED_MASS,
    "LOCAL_MASS": LOCAL_MASS,
    "FIRST_TOKEN_MASS": FIRST_TOKEN_MASS,
    "FOCUSED_MAX": FOCUSED_MAX,
    "NEAR": NEAR,
}


def _row_measures(w, query_ok, allowed, key_ok):
    """Per-query measures of weights w (..., T, S) and the rows each measure is defined on."""
    T, S = w.shape[-2:]
    w = torch.nan_to_num(w.float())
    i = torch.arange(T, device=w.device)[:, None]
    j = torch.arange(S, device=w.device)[None, :]
    dist = (i - j).abs()
    mirror = key_ok.sum(-1)[..., None, None] - 1 - i  # (..., T, 1): key S_valid-1-i
    n_allowed = allowed.sum(-1)  # (..., T)
    m = {
        "entropy": -(w * w.clamp_min(1e-12).log()).sum(-1),
        "span": (w * dist).sum(-1),  # mean |i - j| weighted by attention
        "local_mass": (w * (dist <= NEAR)).sum(-1),
        "previous_mass": (w * (j == i - 1)).sum(-1),
        "first_mass": w[..., 0],
        "max_mass": w.max(-1).values,
        "reversed_mass": (w * ((j - mirror).abs() <= NEAR)).sum(-1),
    }
    m["normalized_entropy"] = m["entropy"] / n_allowed.clamp_min(2).float().log()
    rows = query_ok & (n_allowed > 0)
    masks = dict.fromkeys(m, rows)
    masks["normalized_entropy"] = rows & (n_allowed > 1)  # one key: nothing to spread over
    masks["previous_mass"] = rows & (torch.arange(T, device=w.device) >= 1)  # query 0 has no previous
    return m, masks


def _reduce(measures, masks, dims) -> dict:
    out = {}
    for k, x in measures.items():
        ok = masks[k].expand_as(x).float()
        out[k] = (torch.where(ok > 0, x, 0.0).sum(dims) / ok.sum(dims).clamp_min(1)).tolist()
    return out


def classify_features(f: dict) -> str:
    """Name the pattern of averaged measures (see the thresholds at the top of this module)."""
    if f["normalized_entropy"] >= UNIFORM_ENTROPY:
        return "global/uniform"
    if f["previous_mass"] >= PREVIOUS_TOKEN_MASS:
        return "previous-token"
    if f["reversed_mass"] >= REVERSED_MASS and f["reversed_mass"] > f["local_mass"]:
        return "reversed/anti-diagonal"
    if f["local_mass"] >= LOCAL_MASS:
        return "diagonal/local"
    if f["first_mass"] >= FIRST_TOKEN_MASS or f["max_mass"] >= FOCUSED_MAX:
        return "first-token/focused"
    return "mixed"


def pattern_features(weights, query_mask=None, key_mask=None, causal: bool = False) -> dict:
    """Measures of one (T, S) attention matrix averaged over its real queries.

    Args:
        query_mask: (T,) True for real queries; key_mask: (S,) True for real keys.
        causal: keys j > i were masked (decoder self-attention), which changes #keys per row.
    """
    w = torch.as_tensor(weights).float()
    T, S = w.shape
    key_ok = torch.ones(S, dtype=torch.bool) if key_mask is None else torch.as_tensor(key_mask).bool()
    query_ok = torch.ones(T, dtype=torch.bool) if query_mask is None else torch.as_tensor(query_mask).bool()
    allowed = key_ok[None, :].expand(T, S)
    if causal:
        allowed = allowed & torch.ones(T, S, dtype=torch.bool).tril()
    return _reduce(*_row_measures(w, query_ok, allowed, key_ok), dims=-1)


def classify_pattern(weights, query_mask=None, key_mask=None, causal: bool = False) -> str:
    """'diagonal/local', 'previous-token', 'first-token/focused', 'global/uniform',
    'reversed/anti-diagonal' or 'mixed' for one (T, S) attention matrix."""
    return classify_features(pattern_features(weights, query_mask, key_mask, causal))
