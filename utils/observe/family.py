"""Which model family a cache (or a model) comes from, and what that means for reading its cache.

    encoder-decoder (the paper)   source -> encoder -> memory; target -> decoder (self- and
                                  cross-attention); decoder rows are the target positions
    decoder-only (GPT)            one stack, `decoder.{i}.*` without cross_attn, over one sequence:
                                  the prompt (src, may be empty) followed by the completion (tgt), so
                                  every decoder row is one of the S + T positions
    encoder-only (BERT, ViT)      one stack, `encoder.{i}.*` as in the paper's encoder, over the
                                  source alone (text ids, or an image's [CLS] + patches); no decoder,
                                  so no look-ahead mask: every token sees every other (pads aside);
                                  `memory` is the stack's output, `head.pooled` a classifier's vector

Every tool of utils.observe and utils.figures asks the family, not the cache names: which tokens
label a stack's rows, which attention the recorder follows, which sublayers a layer has, which
positions are real. The family is read from `model.config.arch` when there is a model, and from the
cache's names otherwise: `decoder.*` names without any of `memory`, `src_*`, `encoder.*` or
`cross_attn`: decoder-only; encoder-side names without any `decoder.*` or `tgt_*`: encoder-only.
An encoder-only model's encoder is read exactly as the paper's encoder (rows and keys are the source
tokens, the padding mask alone), so a cache cut down to `encoder.*` names is read right either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DECODER_ONLY_ARCHES = ("gpt",)  # values of ModelShape.arch whose model is one decoder stack
ENCODER_ONLY_ARCHES = ("bert", "vit")  # ... and those whose model is one encoder stack


@dataclass(frozen=True)
class Family:
    name: str
    stacks: tuple[str, ...]  # in the order the forward runs them
    tracked_kind: str  # the attention --track_internals follows (head 0 of its last layer)
    one_sequence: bool  # decoder rows are prompt + completion (S + T), pads may sit between the two
    summary: str  # one line for the --debug trace and the reports

    def sequence_tokens(self, src_tokens, tgt_tokens):
        """Labels of the decoder's positions: the target tokens, or the prompt's then the completion's."""
        if not self.one_sequence or tgt_tokens is None:
            return tgt_tokens
        return [*(src_tokens or []), *tgt_tokens]

    def axes_tokens(self, stack: str, module: str, src_tokens, tgt_tokens):
        """(query labels, key labels) of one attention of `stack`."""
        rows = src_tokens if stack == "encoder" else self.sequence_tokens(src_tokens, tgt_tokens)
        return rows, (rows if module == "self_attn" else src_tokens)

    def layer_steps(self, stack: str) -> list[tuple[str, str]]:
        """[(sublayer, the residual stream entering it)] of one layer, in order."""
        if stack == "decoder" and not self.one_sequence:
            return [("self_attn", "resid_pre"), ("cross_attn", "resid_mid"), ("ffn", "resid_cross")]
        return [("self_attn", "resid_pre"), ("ffn", "resid_mid")]

    def rows_ok(self, stack: str, src_ok: torch.Tensor, tgt_ok: torch.Tensor) -> torch.Tensor:
        """(B | 1, n) real positions of a stack's rows from those of the source and the target."""
        if stack == "encoder":
            return src_ok
        if not self.one_sequence:
            return tgt_ok
        B = max(src_ok.size(0), tgt_ok.size(0))
        return torch.cat([src_ok.expand(B, -1), tgt_ok.expand(B, -1)], dim=1)

    def attention_masks(self, stack: str, module: str, src_ok: torch.Tensor, tgt_ok: torch.Tensor):
        """(real queries (B|1, T), allowed keys (B|1, T, S), real keys (B|1, S)) of one attention."""
        query_ok = self.rows_ok(stack, src_ok, tgt_ok)
        key_ok = src_ok if module == "cross_attn" else query_ok
        T, S = query_ok.size(-1), key_ok.size(-1)
        allowed = key_ok[:, None, :].expand(-1, T, -1)
        if stack == "decoder" and module == "self_attn":  # look-ahead mask (section 3.2.3)
            allowed = allowed & torch.ones(T, S, dtype=torch.bool).tril()
        return query_ok, allowed, key_ok


ENCODER_DECODER = Family(
    "encoder-decoder", stacks=("encoder", "decoder"), tracked_kind="decoder_cross", one_sequence=False,
    summary="the encoder reads the source; the decoder the target and the encoder's memory",
)  # fmt: skip
DECODER_ONLY = Family(
    "decoder-only", stacks=("decoder",), tracked_kind="decoder_self", one_sequence=True,
    summary="one stack; the prompt is part of the sequence (no encoder, no cross-attention)",
)  # fmt: skip
ENCODER_ONLY = Family(
    "encoder-only", stacks=("encoder",), tracked_kind="encoder_self", one_sequence=False,
    summary="one stack that reads (no decoder, no look-ahead mask): every token sees every other",
)  # fmt: skip
FAMILIES = {f.name: f for f in (ENCODER_DECODER, DECODER_ONLY, ENCODER_ONLY)}


def _encoder_side(name: str) -> bool:
    return name in ("memory", "src_embed", "src_pos") or name.startswith("encoder.") or ".cross_attn." in name


def family_of(cache=None, model=None, name: str | None = None) -> Family:
    """The family by its `name` (a report's "family"), of a model (`config.arch`), or of a cache."""
    if name is not None:
        return FAMILIES[name]
    arch = getattr(getattr(model, "config", None), "arch", None)
    if arch is not None:
        if arch in DECODER_ONLY_ARCHES:
            return DECODER_ONLY
        return ENCODER_ONLY if arch in ENCODER_ONLY_ARCHES else ENCODER_DECODER
    names = list(cache or ())
    decoder_side = any(n.startswith(("decoder.", "tgt_")) for n in names)
    encoder_side = any(_encoder_side(n) for n in names)
    if decoder_side and not encoder_side:
        return DECODER_ONLY
    if encoder_side and not decoder_side:
        return ENCODER_ONLY
    return ENCODER_DECODER
