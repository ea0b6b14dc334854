"""The encoder-only part of the analysis report (BERT, ViT): what the head answered and how [CLS]
gathers the input, read from the activation cache by name (utils.observe.family's encoder-only).

    head            "classifier" when the logits are (B, C), "masked_lm" when (B, S, V)
    predictions     classifier: accuracy on the batch and the mean probability of the guess;
                    masked LM: how many positions carry a label (the 15% chosen) and the share of
                    them guessed right
    cls_attention   per layer and head, how [CLS] (position 0) spreads its attention over the real
                    keys: the weight it keeps on itself, the entropy of its row, and its top keys in
                    row 0; a classifier that reads [CLS] learns to gather the whole input there
    special_tokens  BERT: [CLS] [SEP] [MASK] <pad> against the ordinary tokens (utils.observe.embeddings)
    patch_embedding ViT: the patch projection's filters, the [CLS] vector's norm against the patches'

`head_loss` is the cross-entropy of any family's logits, the one the gradient-flow analysis backpropagates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.observe.embeddings import embedding_weights, patch_projections, special_token_ids, special_tokens

TOP_KEYS = 3  # keys listed per [CLS] row


def head_loss(logits: torch.Tensor, labels: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean cross-entropy: (B, C) class logits against (B,) classes, where every class counts (class 0
    too, though it shares PAD's id); (B, T, V) token logits against (B, T) labels, PAD left out (a
    decoder's padding, a masked LM's unmasked positions)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), labels.reshape(-1).long())
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten().long(), ignore_index=pad_id)


def _real_keys(src: torch.Tensor, pad_id: int, n: int) -> torch.Tensor:
    """(B, n) real positions: every position of an image, the non-PAD ids of text."""
    if src.dim() > 2:
        return torch.ones(src.size(0), n, dtype=torch.bool)
    return src.cpu() != pad_id


def predictions(logits: torch.Tensor, labels: torch.Tensor | None, pad_id: int) -> dict:
    logits = logits.detach().float().cpu()
    if logits.dim() == 2:
        probs = logits.softmax(-1)
        entry = {"examples": logits.size(0), "mean_top_probability": probs.max(-1).values.mean()}
        if labels is not None:
            entry["accuracy"] = (probs.argmax(-1) == labels.cpu().reshape(-1)).float().mean()
        return entry
    if labels is None:
        return {"positions": logits.size(0) * logits.size(1)}
    labelled = labels.cpu() != pad_id
    right = (logits.argmax(-1) == labels.cpu()) & labelled
    count = int(labelled.sum())
    return {"labelled_positions": count, "masked_accuracy": right.sum() / max(count, 1)}


def cls_attention(cache: dict, src: torch.Tensor, pad_id: int, tokens=None) -> dict:
    """{'encoder.0.self_attn': [per head: self_weight, entropy, normalized_entropy, top_keys]}."""
    out = {}
    layers = sorted(
        int(n.split(".")[1]) for n in cache if n.startswith("encoder.") and n.endswith(".self_attn.weights")
    )
    for i in layers:
        w = cache[f"encoder.{i}.self_attn.weights"].float().cpu()[:, :, 0]  # (B, H, S): [CLS]'s rows
        ok = _real_keys(src, pad_id, w.size(-1))[:, None, :]  # (B, 1, S)
        entropy = -(w * w.clamp_min(1e-12).log()).sum(-1)  # (B, H)
        n_keys = ok.sum(-1).clamp_min(2).float()  # (B, 1)
        heads = []
        for h in range(w.size(1)):
            top = w[0, h].topk(min(TOP_KEYS, w.size(-1)))
            keys = [tokens[j] if tokens is not None and j < len(tokens) else j for j in top.indices.tolist()]
            heads.append({"head": h, "self_weight": w[:, h, 0].mean(), "entropy": entropy[:, h].mean(),
                          "normalized_entropy": (entropy[:, h] / n_keys[:, 0].log()).mean(),
                          "top_keys": [[k, p] for k, p in zip(keys, top.values.tolist())]})  # fmt: skip
        out[f"encoder.{i}.self_attn"] = heads
    return out


def patch_embedding(model, cache: dict) -> dict:
    """The ViT's patch projection and its [CLS] vector (`src_embed` row 0, before the positions)."""
    out = {}
    for name, w in patch_projections(model).items():
        D, C, P, _ = w.shape
        out = {"weight": name, "filters": D, "channels": C, "patch": P,
               "filter_norm_mean": w.reshape(D, -1).norm(dim=-1).mean()}  # fmt: skip
    if "src_embed" in cache:
        x = cache["src_embed"].float().cpu()  # (B, 1 + N, D)
        out |= {
            "cls_vector_norm": x[:, 0].norm(dim=-1).mean(),
            "patch_vector_norm": x[:, 1:].norm(dim=-1).mean(),
        }
    return out


def encoder_only_report(model, cache, src, labels=None, pad_id: int = 0, tokens=None, vocab_tokens=None):
    """The report's "encoder_only" section (see the module docstring); `tokens` label row 0's positions,
    `vocab_tokens` the vocabulary in id order (to find the special tokens by name)."""
    config = model.config
    logits = cache["logits"]
    image = src.dim() > 2
    report = {
        "arch": getattr(config, "arch", None),
        "head": "classifier" if logits.dim() == 2 else "masked_lm",
        "pooling": (getattr(config, "pooling", "cls") if not image else "cls") if logits.dim() == 2 else None,
        "input": "image patches" if image else "token ids",
        "predictions": predictions(logits, labels, pad_id),
        "cls_attention": cls_attention(cache, src, pad_id, tokens),
    }
    if image:
        report["patch_embedding"] = patch_embedding(model, cache)
    else:
        ids = special_token_ids(config, vocab_tokens)
        matrices = embedding_weights(model)
        if ids and matrices:
            name, weight = next(iter(matrices.items()))
            report["special_tokens"] = {"weight": name} | special_tokens(weight, ids)
    return report


def cls_grid(weights_row: torch.Tensor) -> torch.Tensor | None:
    """[CLS]'s (1 + N,) attention row -> the (side, side) grid of its weights on the patches, or None
    when N is not a square."""
    n = weights_row.numel() - 1
    side = math.isqrt(n)
    return weights_row[1:].reshape(side, side) if side * side == n and n else None
