"""Weights from pytorch_version to the Hugging Face model and back: a key table, not code.

Both versions hold the same tensors under different module paths. Each row of KEY_TABLE
maps a module path of pytorch_version to the Hugging Face one; `{i}` stands for a layer
number, and what follows the path (`.weight`, `.bias`, `.q_proj.weight`, ...) carries over
unchanged. No tensor is reshaped or transposed: both store nn.Linear weights as (out, in).
"""

from __future__ import annotations

import re

import torch

from huggingface_version.configuration import TutorialTransformerConfig
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from pytorch_version.model import Transformer

KEY_TABLE: list[tuple[str, str]] = [
    # (pytorch_version module path,      Hugging Face module path)
    ("src_embed.embedding", "model.encoder.embed_tokens"),
    ("tgt_embed.embedding", "model.decoder.embed_tokens"),
    ("lm_head", "lm_head"),
    ("encoder.layers.{i}.self_attn", "model.encoder.layers.{i}.self_attn"),  # q/k/v/out_proj inside
    ("encoder.layers.{i}.norm1", "model.encoder.layers.{i}.self_attn_layer_norm"),
    ("encoder.layers.{i}.ffn.fc1", "model.encoder.layers.{i}.fc1"),
    ("encoder.layers.{i}.ffn.fc2", "model.encoder.layers.{i}.fc2"),
    ("encoder.layers.{i}.norm2", "model.encoder.layers.{i}.final_layer_norm"),
    ("encoder.norm", "model.encoder.layer_norm"),  # pre-LN only
    ("decoder.layers.{i}.self_attn", "model.decoder.layers.{i}.self_attn"),
    ("decoder.layers.{i}.norm1", "model.decoder.layers.{i}.self_attn_layer_norm"),
    ("decoder.layers.{i}.cross_attn", "model.decoder.layers.{i}.encoder_attn"),
    ("decoder.layers.{i}.norm2", "model.decoder.layers.{i}.encoder_attn_layer_norm"),
    ("decoder.layers.{i}.ffn.fc1", "model.decoder.layers.{i}.fc1"),
    ("decoder.layers.{i}.ffn.fc2", "model.decoder.layers.{i}.fc2"),
    ("decoder.layers.{i}.norm3", "model.decoder.layers.{i}.final_layer_norm"),
    ("decoder.norm", "model.decoder.layer_norm"),  # pre-LN only
]


def _compile(pattern: str) -> re.Pattern:
    """`encoder.layers.{i}.norm1` -> a regex matching `encoder.layers.3.norm1.weight` (i=3, rest=.weight)."""
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<rest>\..+)$")


def convert_key(name: str, to_hf: bool = True) -> str:
    """One parameter name in one version -> its name in the other; KeyError if no row covers it."""
    for pt_pattern, hf_pattern in KEY_TABLE:
        source, target = (pt_pattern, hf_pattern) if to_hf else (hf_pattern, pt_pattern)
        match = _compile(source).match(name)
        if match:
            i = match.groupdict().get("i")
            return (target.format(i=i) if i is not None else target) + match["rest"]
    raise KeyError(f"no row of KEY_TABLE covers the {'pytorch' if to_hf else 'Hugging Face'} key {name!r}")


def convert_state_dict(state: dict[str, torch.Tensor], to_hf: bool = True) -> dict[str, torch.Tensor]:
    return {convert_key(name, to_hf): tensor for name, tensor in state.items()}


def pytorch_to_hf(
    pt_model: Transformer, attn_implementation: str = "sdpa"
) -> TutorialTransformerForConditionalGeneration:
    """A Hugging Face model holding copies of `pt_model`'s weights (same logits, same outputs)."""
    config = TutorialTransformerConfig.from_model_config(pt_model.config)
    hf_model = TutorialTransformerForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation
    )
    state = convert_state_dict(pt_model.state_dict(), to_hf=True)
    hf_model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf_model.to(next(pt_model.parameters()).device).train(pt_model.training)


def hf_to_pytorch(hf_model: TutorialTransformerForConditionalGeneration) -> Transformer:
    """A pytorch_version Transformer holding copies of `hf_model`'s weights."""
    pt_model = Transformer(hf_model.config.to_model_config())
    state = convert_state_dict(hf_model.state_dict(), to_hf=False)
    pt_model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return pt_model.to(hf_model.device).train(hf_model.training)
