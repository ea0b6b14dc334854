"""Recording activations of the Hugging Face model from outside, with forward hooks.

pytorch_version records its activation cache from capture points inside its own code.
The Hugging Face model has none: `record_activations` registers `register_forward_hook`
(and pre-hooks) on its submodules for the length of a `with` block, changing nothing in
the model, and fills the same cache names (../shared/DESIGN.md, "The cache contract"):

    hooked module (Hugging Face)                cache names
    encoder.embed_positions  input, output      src_embed, src_pos
    encoder.layers.{i}  input, output           encoder.{i}.resid_pre, encoder.{i}.resid_post
    ...self_attn.{q,k,v}_proj  output           encoder.{i}.self_attn.{q,k,v}_proj and, per head, q
    ...self_attn.out_proj  input, output        ...self_attn.concat, z (per head), out
    ...self_attn  mask and Cache arguments      ...self_attn.k, v, scores, masked_scores, weights
    ...self_attn_layer_norm, final_layer_norm   encoder.{i}.norm1.*, norm2.*, resid_mid
    ...fc1 output, fc2 input and output         encoder.{i}.ffn.pre_act, post_act, out
    encoder output, lm_head output              memory, logits

The decoder-only GPT (modeling_gpt.py) has one stack, `model`, recorded under the pytorch GPT's
names: `tgt_embed`, `tgt_pos` (the token embeddings themselves with rotary positions), then
`decoder.{i}.*` and `decoder.norm.*` over the whole sequence, prompt then target, as
pytorch_version.gpt's `run_with_cache(src, tgt)` does (`run_gpt_with_cache`). Rotary positions add
`self_attn.q_rot` and `k_rot`: q and k turned by the (cos, sin) the attention module was called with.

Scores and weights are never module outputs: they are recomputed in the hook from the
captured q and k and the mask the attention module was called with, exactly as
pytorch_version's explicit path computes them (the eager kernel's own weights are used
when it returns them). With sdpa that recomputation is the price of looking; without the
`with` block nothing is hooked and nothing is paid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers.cache_utils import EncoderDecoderCache

from huggingface_version.attention import apply_rotary
from huggingface_version.modeling import TutorialPreTrainedModel
from huggingface_version.modeling_gpt import TutorialGPTPreTrainedModel
from utils.observe.tracing import NameFilter, _matcher, register_tracer

INTERNAL = ("scores", "masked_scores", "weights")  # need q K^T: recomputed only when wanted


class _Recorder:
    """Collects values into the cache dict with capture()'s rules, and owns the hook handles."""

    def __init__(self, names: NameFilter, detach: bool) -> None:
        self.wanted = _matcher(names)
        self.detach = detach
        self.cache: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def put(self, name: str, value: torch.Tensor) -> None:
        """Store under `name`; a point that runs twice (decoding steps) keeps a list in call order."""
        if not self.wanted(name):
            return
        value = value.detach() if self.detach else value
        if name not in self.cache:
            self.cache[name] = value
        elif isinstance(self.cache[name], list):
            self.cache[name].append(value)
        else:
            self.cache[name] = [self.cache[name], value]

    def on_output(self, module: nn.Module, fn: Callable) -> None:
        """fn(inputs, output) after `module` runs."""
        self.handles.append(module.register_forward_hook(lambda _m, args, out: fn(args, out)))

    def on_input(self, module: nn.Module, fn: Callable) -> None:
        """fn(inputs) before `module` runs."""
        self.handles.append(module.register_forward_pre_hook(lambda _m, args: fn(args)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, H, T, d_k)


def _hook_attention(rec: _Recorder, attn: nn.Module, prefix: str) -> None:
    """q/k/v projections, per-head q/k/v, scores, masked scores, weights, z, concat, out of one module."""
    H, step = attn.num_heads, {}
    wants_internals = any(rec.wanted(f"{prefix}.{n}") for n in INTERNAL)

    def on_q(_args, out):
        rec.put(f"{prefix}.q_proj", out)
        step["q"] = _split_heads(out, H)
        rec.put(f"{prefix}.q", step["q"])

    def on_k(_args, out):
        rec.put(f"{prefix}.k_proj", out)
        step["k"] = _split_heads(out, H)

    def on_v(_args, out):
        rec.put(f"{prefix}.v_proj", out)
        step["v"] = _split_heads(out, H)

    def on_out_proj(args, out):
        step["concat"], step["out"] = args[0], out

    def on_attention(_module, _args, kwargs, output):
        q, k, v = step.pop("q"), step.pop("k", None), step.pop("v", None)
        rotary = kwargs.get("position_embeddings")  # (cos, sin) of a GPT's rotary positions
        if rotary is not None:  # the turns the module made, made again by its own function
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            rec.put(f"{prefix}.q_rot", q)
            rec.put(f"{prefix}.k_rot", k)
        # keys and values the kernel really used: all cached positions while decoding
        cache = kwargs.get("cache")
        if isinstance(cache, EncoderDecoderCache):
            cache = cache.cross_attention_cache if attn.is_cross_attention else cache.self_attention_cache
        if cache is not None:
            k, v = cache.layers[attn.layer_idx].keys, cache.layers[attn.layer_idx].values
        rec.put(f"{prefix}.k", k)
        rec.put(f"{prefix}.v", v)
        mask = kwargs.get("attention_mask")
        if wants_internals:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, S)
            rec.put(f"{prefix}.scores", scores)
            masked = scores.masked_fill(~mask, float("-inf")) if mask is not None else scores
            rec.put(f"{prefix}.masked_scores", masked)
            weights = output[1] if output[1] is not None else masked.softmax(dim=-1)
            rec.put(f"{prefix}.weights", weights)
        concat = step.pop("concat")  # (B, T, D), the heads side by side
        rec.put(f"{prefix}.z", _split_heads(concat, H))
        rec.put(f"{prefix}.concat", concat)
        rec.put(f"{prefix}.out", step.pop("out"))
        step.clear()

    rec.on_output(attn.q_proj, on_q)
    rec.on_output(attn.k_proj, on_k)
    rec.on_output(attn.v_proj, on_v)
    rec.on_output(attn.out_proj, on_out_proj)
    rec.handles.append(attn.register_forward_hook(on_attention, with_kwargs=True))


def _hook_layer(rec: _Recorder, layer: nn.Module, prefix: str, norm_first: bool) -> None:
    """One encoder or decoder layer: its sublayers, norms, residual stream and FFN."""
    is_decoder = hasattr(layer, "encoder_attn")
    norms = [layer.self_attn_layer_norm] + ([layer.encoder_attn_layer_norm] if is_decoder else [])
    norms.append(layer.final_layer_norm)
    after = ["resid_mid", "resid_cross"][: len(norms) - 1]  # the stream after sublayer k (not the last)

    rec.on_input(layer, lambda args: rec.put(f"{prefix}.resid_pre", args[0]))
    _hook_attention(rec, layer.self_attn, f"{prefix}.self_attn")
    if is_decoder:
        _hook_attention(rec, layer.encoder_attn, f"{prefix}.cross_attn")

    for k, norm in enumerate(norms):

        def on_norm(args, out, k=k):
            if norm_first and k > 0:  # pre-LN: the stream after sublayer k-1 enters norm k
                rec.put(f"{prefix}.{after[k - 1]}", args[0])
            rec.put(f"{prefix}.norm{k + 1}.in", args[0])
            rec.put(f"{prefix}.norm{k + 1}.out", out)
            if not norm_first and k < len(after):  # post-LN: norm k's output is the stream
                rec.put(f"{prefix}.{after[k]}", out)

        rec.on_output(norm, on_norm)

    rec.on_output(layer.fc1, lambda args, out: rec.put(f"{prefix}.ffn.pre_act", out))

    def on_fc2(args, out):
        rec.put(f"{prefix}.ffn.post_act", args[0])  # relu(fc1(x)): the FFN has no inner dropout
        rec.put(f"{prefix}.ffn.out", out)

    rec.on_output(layer.fc2, on_fc2)
    rec.on_output(layer, lambda args, out: rec.put(f"{prefix}.resid_post", out[0]))


def _hook_stack(rec: _Recorder, stack: nn.Module, side: str, embed: str, norm_first: bool) -> None:
    """Embeddings, positions, layers and the final pre-LN norm of the encoder or the decoder."""

    def on_positions(args, out):
        rec.put(f"{embed}_embed", args[0])  # scaled token embeddings, before positions are added
        rec.put(f"{embed}_pos", out)

    if stack.embed_positions is not None:
        rec.on_output(stack.embed_positions, on_positions)
    else:  # rotary positions: nothing is added, the embeddings are the stream (as pytorch_version's)
        rec.on_output(stack.embed_tokens, lambda args, out: on_positions((out,), out))
    for i, layer in enumerate(stack.layers):
        _hook_layer(rec, layer, f"{side}.{i}", norm_first)
    if stack.layer_norm is not None:

        def on_final_norm(args, out):
            rec.put(f"{side}.norm.in", args[0])
            rec.put(f"{side}.norm.out", out)

        rec.on_output(stack.layer_norm, on_final_norm)


@contextmanager
def record_activations(model: nn.Module, names: NameFilter = None, detach: bool = True) -> Iterator[dict]:
    """Collect the activation cache of a TutorialTransformerForConditionalGeneration inside the block.

    Args:
        names: which entries to keep: None for all, a glob such as `"*.weights"`, a list of
            globs, or a predicate on the cache name (as utils.observe.tracing.capture).
        detach: store detached tensors (True) or keep them in the autograd graph.

    Yields the cache dict, filled as the model runs. Every hook is removed when the block
    ends, even on error.
    """
    rec = _Recorder(names, detach)
    base, norm_first = model.model, model.config.norm_first
    try:
        # one stack, the pytorch GPT's `decoder` (also in a copy of the GPT's class run as remote code)
        if isinstance(model, TutorialGPTPreTrainedModel) or getattr(model.config, "arch", None) == "gpt":
            _hook_stack(rec, base, "decoder", "tgt", norm_first)
        else:
            _hook_stack(rec, base.encoder, "encoder", "src", norm_first)
            rec.on_output(base.encoder, lambda args, out: rec.put("memory", out.last_hidden_state))
            _hook_stack(rec, base.decoder, "decoder", "tgt", norm_first)
        rec.on_output(model.lm_head, lambda args, out: rec.put("logits", out))
        yield rec.cache
    finally:
        rec.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward (pre-)hooks on the model's modules; 0 for a model nobody is watching."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


def run_with_cache(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, names: NameFilter = None,
                   detach: bool = True) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Teacher-forced forward that also returns the activation cache {name: tensor}.

    Same names and semantics as pytorch_version's `Transformer.run_with_cache`, recorded from
    outside with forward hooks that are gone afterwards. utils.observe reaches it through
    utils.observe.tracing.run_with_cache (registered below).
    """
    with record_activations(model, names, detach) as cache:
        logits = model(input_ids=src, decoder_input_ids=tgt, use_cache=False).logits
    return logits, cache


def run_gpt_with_cache(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, names: NameFilter = None,
                       detach: bool = True) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """The GPT's teacher-forced forward over prompt then target, `cat(src, tgt)`, as pytorch_version.gpt's
    `run_with_cache(src, tgt)`: the cache covers the whole sequence, the logits returned only `tgt`'s
    positions. PAD is no token (the attention mask), wherever it sits, as there."""
    ids = torch.cat([src, tgt], dim=1)
    with record_activations(model, names, detach) as cache:
        real = (ids != model.config.pad_token_id).long()
        logits = model(input_ids=ids, attention_mask=real, use_cache=False).logits
    return logits[:, src.size(1) :], cache


register_tracer(TutorialPreTrainedModel, run_with_cache)
register_tracer(TutorialGPTPreTrainedModel, run_gpt_with_cache)
