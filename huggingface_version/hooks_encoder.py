"""Recording the activations of the HF encoder-only models (BERT, ViT) from outside, with forward hooks.

The same recorder as huggingface_version/hooks.py (its `_Recorder`, `_hook_stack`: one encoder stack,
hooked as the encoder-decoder's encoder is), filling the cache names pytorch_version.encoder_only's
capture points fill:

    hooked module (Hugging Face)                cache names
    model.embed_positions  input, output        src_embed, src_pos   (a ViT's: [CLS] then the patches)
    model.embed_layer_norm                      embed_norm.in, embed_norm.out   (BERT's --embedding_norm)
    model.layers.{i} and their parts            encoder.{i}.resid_pre, ...self_attn.q, k, v, scores,
                                                masked_scores, weights, z, concat, out, ffn.*, norm1.*, ...
    model.layer_norm                            encoder.norm.in, encoder.norm.out   (pre-LN: a ViT's)
    model  output                               memory
    lm_head.layer_norm                          head.norm.in, head.norm.out   (the masked LM)
    pooler  output                              head.pooled   (a classifier: the one vector per sequence)
    lm_head or classifier  output               logits

`run_encoder_with_cache(model, src)` is the encoder-only model's `run_with_cache`: `src` is (B, S) ids
(PAD is no token: the attention mask) or (B, C, H, W) images; `tgt` is not read, as in pytorch_version.
utils.observe reaches it through utils.observe.tracing.run_with_cache (registered below).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from huggingface_version.hooks import _hook_stack, _Recorder
from huggingface_version.modeling_encoder import TutorialEncoderPreTrainedModel
from utils.observe.tracing import NameFilter, register_tracer


@contextmanager
def record_encoder_activations(
    model: nn.Module, names: NameFilter = None, detach: bool = True
) -> Iterator[dict]:
    """Collect the activation cache of a TutorialBertFor... or TutorialViTForImageClassification inside
    the block (`names`, `detach` as hooks.record_activations); every hook is removed when it ends."""
    rec = _Recorder(names, detach)
    base = model.model
    try:
        _hook_stack(rec, base, "encoder", "src", model.config.norm_first)
        norm = getattr(base, "embed_layer_norm", None)
        if norm is not None:

            def on_embed_norm(args, out):
                rec.put("embed_norm.in", args[0])
                rec.put("embed_norm.out", out)

            rec.on_output(norm, on_embed_norm)
        rec.on_output(base, lambda args, out: rec.put("memory", out.last_hidden_state))
        if hasattr(model, "lm_head"):  # the masked LM

            def on_head_norm(args, out):
                rec.put("head.norm.in", args[0])
                rec.put("head.norm.out", out)

            rec.on_output(model.lm_head.layer_norm, on_head_norm)
            rec.on_output(model.lm_head, lambda args, out: rec.put("logits", out))
        else:  # a classifier
            rec.on_output(model.pooler, lambda args, out: rec.put("head.pooled", out))
            rec.on_output(model.classifier, lambda args, out: rec.put("logits", out))
        yield rec.cache
    finally:
        rec.remove()


def encoder_logits(model: nn.Module, src: torch.Tensor) -> torch.Tensor:
    """The logits of ids (padding from the pad id, as pytorch_version reads them) or of images."""
    if src.dtype.is_floating_point:
        return model(pixel_values=src).logits
    return model(input_ids=src, attention_mask=(src != model.config.pad_token_id).long()).logits


def run_encoder_with_cache(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor | None = None,
                           names: NameFilter = None, detach: bool = True):  # fmt: skip
    """(logits, the activation cache {name: tensor}) of an encoder-only model's forward, as
    pytorch_version.encoder_only's `run_with_cache(src, tgt)` (`tgt` is not read: there is no target)."""
    with record_encoder_activations(model, names, detach) as cache:
        logits = encoder_logits(model, src)
    return logits, cache


register_tracer(TutorialEncoderPreTrainedModel, run_encoder_with_cache)
