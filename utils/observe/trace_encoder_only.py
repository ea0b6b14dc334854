"""The `--debug` trace of an encoder-only model (BERT, ViT): one stack that reads, and a head.

An encoder-only cache (utils.observe.family) has `src_embed`, `src_pos` (BERT: `embed_norm.*`),
`encoder.{i}.*` as the paper's encoder has them, `encoder.norm.*` when pre-LN (ViT), `memory` (the
stack's output), `head.pooled` for a classifier and `logits`: (1, C) classes or (1, S, V) tokens.
There is no decoder, so no look-ahead mask: the header says so, step 4 of every attention blocks
padding only, and each token's vector is built from both sides of it.

    embeddings   BERT: the token vectors (unscaled), + learned positions, the embedding LayerNorm;
                 ViT: each P x P patch's pixels times one matrix, the learned [CLS] vector put first,
                 + learned positions
    layers       the numbered attention steps, the FFN, the LayerNorms: after each sublayer (post-LN,
                 BERT) or before it with one last LayerNorm closing the stack (pre-LN, ViT); a ViT's
                 [CLS] row of attention is printed as the image's grid of patches
    head         masked LM: the guess at each [MASK]; classifier: the pooled vector ([CLS]'s output,
                 through BERT's tanh pooler, or the mean of the tokens) and the class probabilities
"""

from __future__ import annotations

import math

import torch

from utils.observe.family import ENCODER_ONLY
from utils.observe.trace_one_stack import OneStackTracePrinter
from utils.observe.trace_printer import RULE, THIN, format_trace, parse_selection, stats

PADDING_ONLY_NOTE = "4. Mask: padding only (no look-ahead): each query sees every real key, on both sides"
MASK_TOKEN = "[MASK]"
SHOWN = {" ": "␣", "\n": "\\n", "\t": "\\t"}  # a character-level vocabulary's blanks, made visible


def shown(token: str) -> str:
    """A token as the trace prints it: a space as ␣, a newline as \\n (a line of tokens stays one line)."""
    return SHOWN.get(token, token)


class EncoderOnlyTracePrinter(OneStackTracePrinter):
    """The trace of one encoder stack over the source tokens; `labels` name a classifier's classes,
    `image` (C, H, W) is the ViT's input (None for text)."""

    stack_name = "encoder"

    def __init__(self, *args, labels=None, image=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.src_tokens = [shown(t) for t in self.src_tokens]
        if self.predicted is not None:
            self.predicted = [shown(t) for t in self.predicted]
        self.labels, self.image = labels, image

    def sliced(self, label: str, name: str, index, indent: int) -> None:
        t = self.get(name)
        if t is not None:
            self.say(f"{label:<28} {stats(t[:, index])}", indent)

    # ---- embeddings -------------------------------------------------------------------------------
    def text_embeddings(self) -> None:
        self.value("token embedding (unscaled)", "src_embed", 1)
        self.value("+ position embedding", "src_pos", 1)
        if self.get("embed_norm.out") is not None:
            self.say("> LayerNorm of the embeddings (BERT normalises the sum before the first layer)", 1)
            self.value("LayerNorm input", "embed_norm.in", 2)
            self.value("LayerNorm output", "embed_norm.out", 2)

    def image_embeddings(self) -> None:
        C, H, W = self.image.shape
        n = len(self.src_tokens) - 1
        side = math.isqrt(n)
        P = H // side if side else H
        self.say(f"image (C, H, W) = ({C}, {H}, {W})   pixels: {stats(self.image)}", 1)
        self.say(f"cut into {n} patches of {P} x {P} ({side} x {side}), row by row: token = one patch", 1)
        self.say(f"> Patch embedding: each patch's {C * P * P} pixels times one ({C * P * P}, D) matrix", 1)
        self.say("(a Conv2d whose stride is its size: the patches do not overlap)", 2)
        self.sliced("patch vectors", "src_embed", slice(1, None), 2)
        self.say("> [CLS]: one learned vector, the same for every image, put before the patches", 1)
        self.sliced("[CLS] vector", "src_embed", slice(0, 1), 2)
        self.value("+ position embedding", "src_pos", 1)

    # ---- the layers -------------------------------------------------------------------------------
    def cls_grid(self, prefix: str) -> None:
        """A ViT's [CLS] query over the patches, laid out as the image: where it gathers from."""
        weights = self.get(f"{prefix}.weights")
        side = math.isqrt(len(self.src_tokens) - 1)
        if weights is None or side * side != len(self.src_tokens) - 1:
            return
        for h in (h for h in self.heads if h < weights.size(1)):
            row = weights[0, h, 0]
            self.say(f"head {h} [CLS] -> itself {row[0]:.2f}, -> the patches as the image's grid:", 3)
            for r in range(side):
                self.say(" ".join(f"{w:5.2f}" for w in row[1 + r * side : 1 + (r + 1) * side].tolist()), 4)

    def block(self, i: int) -> None:
        rows, layer = self.src_tokens, f"encoder.{i}"
        self.say(THIN)
        self.say(f"Encoder layer {i}")
        self.value("layer input", f"{layer}.resid_pre", 1)
        self.norm(layer, "norm1", "self-attention")
        title = "Self-attention (bidirectional: no look-ahead mask)"
        self.attention(f"{layer}.self_attn", title, rows, rows, mask_note=PADDING_ONLY_NOTE)
        if self.image is not None:
            self.cls_grid(f"{layer}.self_attn")
        self.residual(layer, "norm1", "self-attention", "resid_mid")
        self.norm(layer, "norm2", "feed-forward")
        self.ffn(layer)
        self.residual(layer, "norm2", "feed-forward", "resid_post")
        self.value("layer output", f"{layer}.resid_post", 1)

    # ---- the head ---------------------------------------------------------------------------------
    def pooling(self) -> str:
        """How the classifier made its one vector, read from the cache: the mean of the token outputs,
        [CLS]'s output as it is, or [CLS]'s output through a pooler (BERT: Linear + tanh)."""
        pooled, memory = self.get("head.pooled"), self.get("memory")
        if pooled is None or memory is None:
            return "the head's one vector"
        if torch.allclose(pooled[0], memory[0].mean(0), atol=1e-5):
            return "the mean of every token's output"
        if torch.allclose(pooled[0], memory[0, 0], atol=1e-5):
            return "[CLS]'s output (row 0 of the encoder output)"
        return "[CLS]'s output through the pooler, tanh(Linear(.))"

    def classifier(self, logits: torch.Tensor) -> None:
        how = self.pooling()
        self.say(f"OUTPUT    classifier: one vector per sequence ({how}), Linear to the classes")
        self.say(RULE)
        self.sliced("[CLS] output", "memory", slice(0, 1), 1)
        self.value("pooled vector", "head.pooled", 1)
        pooled = self.get("head.pooled")
        if pooled is not None:
            shown = ", ".join(f"{x:+.3f}" for x in pooled[0, :8].tolist())
            self.say(f"{'pooled, first dimensions':<28} [{shown}{', ...' if pooled.size(-1) > 8 else ''}]", 1)
        self.value("logits", "logits", 1)
        probs = logits[0].float().softmax(-1)
        names = list(self.labels or [f"class {c}" for c in range(probs.numel())])
        shown = ", ".join(f"{names[c]} {p:.3f}" for c, p in enumerate(probs.tolist()))
        self.say(f"class probabilities (softmax): {shown}", 1)
        self.say(f"predicted class: {names[int(probs.argmax())]} (p = {probs.max():.3f})", 1)

    def masked_lm(self, logits: torch.Tensor) -> None:
        self.say("OUTPUT    masked-LM head: Linear, GELU, LayerNorm, then the output layer (tied to the")
        self.say("          token embedding): a token at every position, scored at the masked ones")
        self.say(RULE)
        self.value("logits", "logits", 1)
        probs = logits[0].float().softmax(-1)  # (S, V)
        masked = [i for i, t in enumerate(self.src_tokens) if t == MASK_TOKEN]
        if not masked:
            self.say(f"no {MASK_TOKEN} in this example: the guesses at unchanged tokens are not shown", 1)
        for i in masked:
            guess = self.predicted[i] if self.predicted is not None else str(int(probs[i].argmax()))
            context = " ".join(self.src_tokens[max(0, i - 3) : i + 4])
            p = probs[i].max()
            self.say(f"position {i:>3} {MASK_TOKEN} -> {guess} (p = {p:.3f})   in: {context}", 1)

    def format(self, num_layers: int) -> str:
        self.say(RULE)
        self.say(f"ENCODER-ONLY MODEL   {ENCODER_ONLY.summary}")
        self.say("no decoder: nothing is generated left to right; the head reads the encoder's output")
        self.say(RULE)
        self.say(f"ENCODER   {len(self.src_tokens)} source tokens: {' '.join(self.src_tokens)}")
        self.say(RULE)
        self.image_embeddings() if self.image is not None else self.text_embeddings()
        for i in range(num_layers):
            if self.layers is None or i in self.layers:
                self.block(i)
        if self.pre_ln():
            self.say(THIN)
            self.say("Final LayerNorm (pre-LN closes the stack with one)")
            self.value("LayerNorm input", "encoder.norm.in", 1)
            self.value("LayerNorm output", "encoder.norm.out", 1)
        self.value("encoder output (memory)", "memory", 0)
        self.say(RULE)
        logits = self.get("logits")
        if logits is not None:
            (self.masked_lm if logits.dim() == 3 else self.classifier)(logits)
        return "\n".join(self.lines)


def class_names(config, count: int) -> list[str]:
    """A classifier's class names: the config's `labels` (pytorch_version), `id2label` (Hugging Face),
    else 'class 0', 'class 1', ..."""
    labels = list(getattr(config, "labels", ()) or ())
    if not labels and getattr(config, "id2label", None):
        labels = [config.id2label[i] for i in sorted(config.id2label)]
    return labels if len(labels) == count else [f"class {c}" for c in range(count)]


def encoder_only_trace(cache, logits, src, to_tokens, config, layers="all", heads="0") -> str:
    """trace_example's answer for an encoder-only model: `src` (1, S) ids or (1, C, H, W) an image,
    `logits` (1, C) or (1, S, V) and `cache` from its forward; `to_tokens` names the positions."""
    image = src.dim() > 2
    names = class_names(config, logits.size(-1)) if logits.dim() == 2 else None
    guesses = to_tokens(logits[0].argmax(-1).tolist()) if logits.dim() == 3 else None
    return format_trace(
        cache, to_tokens(src[0].tolist()), [], config.num_layers,
        layers=parse_selection(layers, config.num_layers, "layers"),
        heads=parse_selection(heads, config.num_heads, "heads"),
        predicted=guesses, activation=getattr(config, "activation", "relu"), family=ENCODER_ONLY,
        labels=names, image=src[0].float().cpu() if image else None,
    )  # fmt: skip
