"""What the model's input layer learnt: token-embedding matrices, a ViT's patch projection, and how
BERT's special tokens sit among the ordinary ones. Read from `named_parameters` by name only, so the
from-scratch and the Hugging Face models are read alike.

    token embeddings   (V, D) matrices named `embed...` (HF: `shared`), tied ones counted once: the
                       norm of each token's vector, and the mean cosine similarity between tokens
    patch projection   a ViT has no token table: each P x P patch's pixels go through one Conv2d,
                       (D, C, P, P) weights named `patch...`; its D filters are the rows read here,
                       each C * P * P pixels wide (the pattern that one output dimension looks for)
    special tokens     [CLS], [SEP], [MASK] (and <pad>) against the ordinary tokens: a [CLS] whose
                       vector looks like no character's is free to be a sentence-level summary
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[MASK]", "<pad>")


def embedding_weights(model) -> dict[str, torch.Tensor]:
    """Token-embedding matrices (V, D) found by name (`embed...`, HF `shared`); tied ones once."""
    found, seen = {}, set()
    for name, p in model.named_parameters():
        if p.ndim == 2 and re.search(r"embed|shared", name) and "position" not in name:
            if p.data_ptr() not in seen:
                found[name] = p.detach().float().cpu()
            seen.add(p.data_ptr())
    return found


def patch_projections(model) -> dict[str, torch.Tensor]:
    """A ViT's patch-embedding Conv2d weights (D, C, P, P), by name (`patch...projection`); else {}."""
    return {
        name: p.detach().float().cpu()
        for name, p in model.named_parameters()
        if p.ndim == 4 and "patch" in name and name.endswith("weight")
    }


def _mean_cosine(u: torch.Tensor) -> torch.Tensor:
    """Mean of cos(i, j) over pairs i != j of unit rows u: (|sum u|^2 - V) / (V (V - 1))."""
    V = u.size(0)
    return (u.sum(0).pow(2).sum() - V) / max(V * (V - 1), 1)


def matrix_summary(w: torch.Tensor) -> dict:
    """Norm distribution and mean pairwise cosine similarity of the rows of one (N, D) matrix."""
    w = torch.as_tensor(w).float()
    norms = w.norm(dim=-1)
    quantiles = torch.quantile(norms, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    entry = {"vocab_size": w.size(0), "dim": w.size(1), "norm_mean": norms.mean(), "norm_std": norms.std()}
    entry |= {"norm_min": norms.min(), "norm_max": norms.max(), "norm_quantiles": quantiles}
    return entry | {"mean_cosine_similarity": _mean_cosine(F.normalize(w, dim=-1))}


def analyze_embeddings(model, weights: dict | None = None) -> dict:
    """{name: matrix_summary} of each token-embedding matrix (`weights`, default: the model's), and of
    each patch projection, its filters as the rows (`"rows": "filters"`, `vocab_size` their count)."""
    chosen = weights if weights is not None else embedding_weights(model)
    out = {name: matrix_summary(w) for name, w in chosen.items()}
    if weights is None:
        for name, w in patch_projections(model).items():
            D, C, P, _ = w.shape
            out[name] = matrix_summary(w.reshape(D, -1)) | {"rows": "filters", "channels": C, "patch": P}
    return out


def special_token_ids(config, vocab_tokens=None) -> dict[str, int]:
    """{'[CLS]': id, ...}: by name in `vocab_tokens` (id order) when given, else the config's ids
    (cls_id, mask_id, sep_id, pad_id; HF: *_token_id) that are set."""
    if vocab_tokens is not None:
        return {t: vocab_tokens.index(t) for t in SPECIAL_TOKENS if t in vocab_tokens}
    found = {}
    for token, field in zip(SPECIAL_TOKENS, ("cls", "sep", "mask", "pad")):
        value = getattr(config, f"{field}_id", getattr(config, f"{field}_token_id", None))
        if isinstance(value, int) and value >= 0:
            found[token] = value
    return found


def special_tokens(weight: torch.Tensor, ids: dict[str, int], first_ordinary: int | None = None) -> dict:
    """Each special token's vector against the ordinary tokens' (ids from `first_ordinary`, default
    one past the largest special id): its norm, its mean cosine to the ordinary vectors, its most
    similar ordinary token; and the ordinary tokens' own mean norm and mean cosine to each other."""
    w = torch.as_tensor(weight).float()
    start = first_ordinary if first_ordinary is not None else max(ids.values(), default=-1) + 1
    ordinary = F.normalize(w[start:], dim=-1)
    out = {"ordinary": {"count": ordinary.size(0), "norm_mean": w[start:].norm(dim=-1).mean(),
                        "mean_cosine_similarity": _mean_cosine(ordinary)}}  # fmt: skip
    for token, i in ids.items():
        cos = ordinary @ F.normalize(w[i], dim=0)  # (V - start,)
        out[token] = {"id": i, "norm": w[i].norm(), "mean_cosine_to_ordinary": cos.mean(),
                      "max_cosine_to_ordinary": cos.max(),
                      "nearest_ordinary_id": start + int(cos.argmax())}  # fmt: skip
    return out
