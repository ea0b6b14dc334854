"""The `--debug` trace: one forward pass, step by step, read from an activation cache.

`format_trace(cache, ...)` turns the cache of a single example (batch row 0) into text:
Encoder -> Decoder -> Output, a section per layer and sublayer, the seven numbered steps
of multi-head attention (with rotary positions, the turn of q and k as step 2b), the ReLU (or
GELU) and LayerNorm before/after comparisons. It only reads the cache, so it serves both
implementations; the caller decides where the text goes. A decoder-only model's cache (the
family, utils.observe.family) is traced by utils.observe.trace_decoder_only: one stack over the
prompt and the completion; an encoder-only model's (BERT, ViT) by utils.observe.trace_encoder_only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from utils.observe.family import ENCODER_ONLY, family_of
from utils.observe.tracing import run_with_cache

RULE = "=" * 78
THIN = "-" * 78
MAX_MATRIX = 12  # print attention matrices only when both sides have at most this many tokens
ROTATED_SHOWN = 4  # the rotary step prints the lengths of q and k at this many first positions
MASK_NOTE = "4. Mask: blocked positions get -inf (padding; look-ahead in the decoder)"


def stats(t: torch.Tensor, extremes: bool = True) -> str:
    """'shape (1, 5, 32)  mean +0.012  std 0.981  [min -2.10, max 2.30]' over finite values."""
    values = t.detach().float()
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return f"shape {tuple(t.shape)}  (no finite values)"
    text = f"shape {tuple(t.shape)}  mean {finite.mean():+.4f}  std {finite.std(unbiased=False):.4f}"
    if extremes:
        text += f"  min {finite.min():+.3f}  max {finite.max():+.3f}"
    return text


def parse_selection(spec: str, count: int, what: str) -> list[int]:
    """'all' or '0,2' -> indices, checked against `count`."""
    if spec.strip().lower() == "all":
        return list(range(count))
    try:
        chosen = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"--debug_{what} takes 'all' or comma-separated numbers, got {spec!r}") from err
    bad = [i for i in chosen if not 0 <= i < count]
    if bad or not chosen:
        raise ValueError(f"--debug_{what} must name {what} in 0..{count - 1}, got {spec!r}")
    return chosen


def _matrix(weights: torch.Tensor, rows: Sequence[str], cols: Sequence[str]) -> list[str]:
    """A small attention matrix as text, query tokens down, key tokens across."""
    width = max(5, *(len(c) for c in cols))
    lines = [" " * 10 + "".join(f"{c[:width]:>{width + 1}}" for c in cols)]
    for r, row in zip(rows, weights.tolist()):
        lines.append(f"{r[:9]:>9} " + "".join(f"{w:>{width + 1}.2f}" for w in row))
    return lines


class TracePrinter:
    """Formats the trace; `layers` and `heads` limit what is shown in detail."""

    def __init__(
        self, cache, src_tokens, tgt_tokens, layers=None, heads=(0,), predicted=None, activation="relu"
    ) -> None:
        self.cache = {k: (v[-1] if isinstance(v, list) else v) for k, v in cache.items()}
        self.activation = activation  # the FFN's nonlinearity: relu or gelu
        self.src_tokens, self.tgt_tokens = list(src_tokens), list(tgt_tokens)
        self.layers, self.heads = layers, list(heads)
        self.predicted = predicted  # the most likely next token at each target position
        self.lines: list[str] = []

    def get(self, name: str) -> torch.Tensor | None:
        value = self.cache.get(name)
        return value[:1] if value is not None else None  # the first example of the batch

    def say(self, text: str = "", indent: int = 0) -> None:
        self.lines.append("  " * indent + text)

    def value(self, label: str, name: str, indent: int, extremes: bool = True) -> None:
        t = self.get(name)
        if t is not None:
            self.say(f"{label:<28} {stats(t, extremes)}", indent)

    def k_before_rotation(self, prefix: str) -> torch.Tensor:
        """(1, H, T, d_k) keys split into heads, before rotary positions turn them (the cache's `k` is
        after the turn; `k_proj` is before the split)."""
        k_proj, H = self.get(f"{prefix}.k_proj"), self.get(f"{prefix}.q").size(1)
        return k_proj.view(k_proj.size(0), k_proj.size(1), H, -1).transpose(1, 2)

    def rotation(self, prefix: str, rows: list[str]) -> None:
        """Step 2b: rotary positions turn each pair of q's and k's dimensions; lengths stay."""
        q, q_rot, k_rot = (self.get(f"{prefix}.{name}") for name in ("q", "q_rot", "k_rot"))
        k = self.k_before_rotation(prefix)
        self.say("2b. Rotary positions: q and k turned by position-dependent angles", 2)
        self.say("pair (j, j + d_k/2) at position m turns by m * theta_j: q_i . k_j depends on i - j only", 3)
        for label, before, after in (("Q", q, q_rot), ("K", k, k_rot)):
            self.say(f"{label + ' before the turn':<28} {stats(before, extremes=False)}", 3)
            self.say(f"{label + ' after the turn':<28} {stats(after, extremes=False)}", 3)
        n = min(ROTATED_SHOWN, q.size(2), len(rows))
        for h in (h for h in self.heads if h < q.size(1)):
            for label, before, after in (("|q|", q, q_rot), ("|k|", k, k_rot)):
                lengths = zip(before[0, h, :n].norm(dim=-1).tolist(), after[0, h, :n].norm(dim=-1).tolist())
                shown = ", ".join(f"{rows[i]} {b:.4f} -> {a:.4f}" for i, (b, a) in enumerate(lengths))
                self.say(f"head {h} {label} before -> after: {shown}", 3)
        pairs = ((q, q_rot), (k, k_rot))
        change = max(float((a.norm(dim=-1) - b.norm(dim=-1)).abs().max()) for b, a in pairs)
        self.say(f"{'rotation keeps lengths':<28} largest change of |q| or |k|: {change:.1e}", 3)

    def attention(self, prefix: str, title: str, rows: list[str], cols: list[str], mask_note=MASK_NOTE):
        if self.get(f"{prefix}.q") is None:
            return
        self.say(f"> {title}", 1)
        d_k = self.get(f"{prefix}.q").size(-1)
        rotary = self.get(f"{prefix}.q_rot") is not None and self.get(f"{prefix}.k_proj") is not None
        source = "x" if rows is cols else "memory"
        self.say(f"1. Linear projections: Q = x W^Q, K = {source} W^K, V = {source} W^V", 2)
        for part, inp in (("q", "x"), ("k", source), ("v", source)):
            self.value(f"{part.upper()} = {inp} W^{part.upper()}", f"{prefix}.{part}_proj", 3)
        self.say("2. Reshape for heads: (B, T, D) -> (B, H, T, d_k)", 2)
        for part in ("q", "k", "v"):
            if rotary and part == "k":  # the cache's k is already turned: show it as split, before 2b
                self.say(f"{'K per head':<28} {stats(self.k_before_rotation(prefix), extremes=False)}", 3)
            else:
                self.value(f"{part.upper()} per head", f"{prefix}.{part}", 3, extremes=False)
        if rotary:
            self.rotation(prefix, rows)
        scores = self.get(f"{prefix}.scores")
        self.say(f"3. Scores = Q K^T / sqrt(d_k)   (sqrt({d_k}) = {math.sqrt(d_k):.2f})", 2)
        if rotary:
            self.say("with the turned Q and K of step 2b", 3)
        if scores is not None:
            self.say(f"{'scaled scores':<28} {stats(scores)}", 3)
            self.say(f"{'unscaled std would be':<28} {scores.std().item() * math.sqrt(d_k):.4f}", 3)
        masked = self.get(f"{prefix}.masked_scores")
        self.say(mask_note, 2)
        if masked is not None:
            blocked = int(torch.isneginf(masked[0, 0]).sum())
            self.say(f"{'blocked per head':<28} {blocked} of {masked[0, 0].numel()} query-key pairs", 3)
        weights = self.get(f"{prefix}.weights")
        self.say("5. Softmax over keys: each row sums to 1", 2)
        if weights is not None:
            self.say(f"{'weights':<28} {stats(weights)}", 3)
            entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean(-1)[0]  # (H,)
            self.say(f"{'entropy per head (nats)':<28} {[round(e, 3) for e in entropy.tolist()]}", 3)
            for h in (h for h in self.heads if h < weights.size(1)):
                top = weights[0, h].argmax(-1).tolist()
                pairs = ", ".join(f"{rows[i]}->{cols[j]}" for i, j in enumerate(top) if i < len(rows))
                self.say(f"head {h} strongest key per query: {pairs}", 3)
                if len(rows) <= MAX_MATRIX and len(cols) <= MAX_MATRIX:
                    for line in _matrix(weights[0, h, : len(rows), : len(cols)], rows, cols):
                        self.say(line, 4)
        self.say("6. Weighted sum of values: Z = weights @ V", 2)
        self.value("Z per head", f"{prefix}.z", 3, extremes=False)
        self.say("7. Concatenate heads and apply W^O", 2)
        self.value("concat (B, T, D)", f"{prefix}.concat", 3, extremes=False)
        self.value("output = concat W^O", f"{prefix}.out", 3)

    def add_norm(self, layer: str, norm: str, title: str) -> None:
        self.say(f"> Add & Norm ({title})", 1)
        self.value("LayerNorm input", f"{layer}.{norm}.in", 2)
        self.value("LayerNorm output", f"{layer}.{norm}.out", 2)

    def ffn(self, layer: str) -> None:
        if self.activation != "relu":
            return self.smooth_ffn(layer)
        self.say("> Feed-forward: FFN(x) = max(0, x W1 + b1) W2 + b2", 1)
        self.value("before ReLU (x W1 + b1)", f"{layer}.ffn.pre_act", 2)
        post = self.get(f"{layer}.ffn.post_act")
        if post is not None:
            self.value("after ReLU", f"{layer}.ffn.post_act", 2)
            self.say(f"{'zeroed by the ReLU':<28} {(post == 0).float().mean().item():.1%}", 2)
        self.value("FFN output (W2)", f"{layer}.ffn.out", 2)

    def smooth_ffn(self, layer: str) -> None:
        """The FFN with GELU(x) = x Phi(x): no exact zeros; negative inputs give outputs in (-0.17, 0]."""
        act = self.activation.upper()
        self.say(f"> Feed-forward: FFN(x) = {act}(x W1 + b1) W2 + b2", 1)
        self.value(f"before {act} (x W1 + b1)", f"{layer}.ffn.pre_act", 2)
        self.value(f"after {act}", f"{layer}.ffn.post_act", 2)
        pre = self.get(f"{layer}.ffn.pre_act")
        if pre is not None:
            self.say(f"{f'inputs < 0 ({act} near 0)':<28} {(pre < 0).float().mean().item():.1%}", 2)
        self.value("FFN output (W2)", f"{layer}.ffn.out", 2)

    def stack(self, side: str, count: int) -> None:
        src, tgt = self.src_tokens, self.tgt_tokens
        for i in range(count):
            if self.layers is not None and i not in self.layers:
                continue
            layer = f"{side}.{i}"
            self.say(THIN)
            self.say(f"{side.capitalize()} layer {i}")
            self.value("layer input", f"{layer}.resid_pre", 1)
            rows = src if side == "encoder" else tgt
            title = "Self-attention" if side == "encoder" else "Masked self-attention (look-ahead)"
            self.attention(f"{layer}.self_attn", title, rows, rows)
            self.add_norm(layer, "norm1", "self-attention")
            if side == "decoder":
                self.attention(
                    f"{layer}.cross_attn", "Cross-attention: decoder queries, encoder keys", tgt, src
                )
                self.add_norm(layer, "norm2", "cross-attention")
            self.ffn(layer)
            self.add_norm(layer, "norm3" if side == "decoder" else "norm2", "feed-forward")
            self.value("layer output", f"{layer}.resid_post", 1)

    def format(self, num_layers: int) -> str:
        self.say(RULE)
        self.say(f"ENCODER   source tokens: {' '.join(self.src_tokens)}")
        self.say(RULE)
        self.value("token embedding x sqrt(D)", "src_embed", 1)
        self.value("+ positional encoding", "src_pos", 1)
        self.stack("encoder", num_layers)
        self.value("encoder output (memory)", "memory", 0)
        self.say(RULE)
        self.say(f"DECODER   target input: {' '.join(self.tgt_tokens)}")
        self.say(RULE)
        self.value("token embedding x sqrt(D)", "tgt_embed", 1)
        self.value("+ positional encoding", "tgt_pos", 1)
        self.stack("decoder", num_layers)
        self.say(RULE)
        self.say("OUTPUT    Linear to vocabulary, softmax gives next-token probabilities")
        self.say(RULE)
        self.value("logits", "logits", 1)
        if self.predicted is not None:
            pairs = ", ".join(f"{t} -> {p}" for t, p in zip(self.tgt_tokens, self.predicted))
            self.say(f"most likely next token: {pairs}", 1)
        return "\n".join(self.lines)


def format_trace(
    cache, src_tokens, tgt_tokens, num_layers, layers=None, heads=(0,), predicted=None, activation="relu",
    family=None, labels=None, image=None,
) -> str:  # fmt: skip
    """The whole trace as text; `layers`/`heads` are index lists (None: every layer). The `family`
    (utils.observe.family; default: read from the cache's names) picks the printer; a decoder-only
    model's `predicted` holds one token per position of the prompt and the completion; an encoder-only
    model's (utils.observe.trace_encoder_only) one per source position (masked LM), `labels` name a
    classifier's classes and `image` (C, H, W) is a ViT's input."""
    family = family or family_of(cache)
    args = (cache, src_tokens, tgt_tokens, layers, heads, predicted, activation)
    if family is ENCODER_ONLY:
        from utils.observe.trace_encoder_only import EncoderOnlyTracePrinter

        return EncoderOnlyTracePrinter(*args, labels=labels, image=image).format(num_layers)
    printer = TracePrinter
    if family.one_sequence:
        from utils.observe.trace_decoder_only import DecoderOnlyTracePrinter as printer
    return printer(*args).format(num_layers)


@torch.no_grad()
def trace_example(model, src: torch.Tensor, tgt_in: torch.Tensor, to_tokens, layers="all", heads="0") -> str:
    """The trace of row 0 of a batch, padding cut off, in eval mode, for either implementation.

    `model` needs a tracer (utils.observe.tracing.run_with_cache) and a config with pad_id,
    num_layers and num_heads;
    `to_tokens` turns a sequence of ids into token strings (the figure and trace labels); a pair
    (source_fn, target_fn) labels each side with its own vocabulary. A decoder-only model reads `src`
    (the prompt, may be empty) and `tgt_in` as one sequence: its positions are labelled by the
    prompt's tokens then the target's, and each gets its most likely next token. An encoder-only
    model (BERT, ViT) reads `src` alone (ids, or (B, C, H, W) images); `tgt_in` is (B, 0).
    """
    src_tokens, tgt_tokens = to_tokens if isinstance(to_tokens, tuple) else (to_tokens, to_tokens)
    cfg = model.config
    image = src.dim() > 2  # a ViT's (B, C, H, W) images: nothing to cut off
    src = src[:1] if image else src[:1, : int((src[0] != cfg.pad_id).sum())]
    tgt = tgt_in[:1, : int((tgt_in[0] != cfg.pad_id).sum())]
    was_training = model.training
    model.eval()
    try:
        logits, cache = run_with_cache(model, src, tgt)
    finally:
        model.train(was_training)
    family = family_of(cache, model)
    if family is ENCODER_ONLY:  # no target side: the source's tokens, and the head's answer
        from utils.observe.trace_encoder_only import encoder_only_trace

        return encoder_only_trace(cache, logits, src, src_tokens, cfg, layers, heads)
    if family.one_sequence:  # the cache's logits cover every position, the prompt's too
        logits = cache.get("logits", logits)
    return format_trace(
        cache,
        src_tokens(src[0].tolist()),
        tgt_tokens(tgt[0].tolist()),
        cfg.num_layers,
        layers=parse_selection(layers, cfg.num_layers, "layers"),
        heads=parse_selection(heads, cfg.num_heads, "heads"),
        predicted=tgt_tokens(logits[0].argmax(-1).tolist()),
        activation=getattr(cfg, "activation", "relu"),
        family=family,
    )
