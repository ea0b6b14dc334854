"""The one place tests get their models: tiny configs for both versions, as transformers' model
testers build theirs (hidden 32, 2 layers, 4 heads, vocabulary 30).

    tiny_config(**overrides)        a ModelConfig
    tiny_pytorch(**overrides)       pytorch_version's Transformer, seeded, eval mode
    tiny_hf(attn, **overrides)      the Hugging Face model with the same weights (converted)
    tiny_twins(attn, **overrides)   both, the same function
    tiny_gpt(**overrides)           pytorch_version's decoder-only GPT (rotary, GELU, pre-LN), eval mode
    tiny_gpt_twins(attn, **overrides)  (that GPT, the HF TutorialGPTForCausalLM with the same weights)
    tiny_bert(**overrides), tiny_vit(**overrides)  pytorch_version's encoder-only models, eval mode
    tiny_encoder_twins(arch, attn, **overrides)  (that BERT or ViT, its HF twin with the same weights)

The readable models: pass `speed=SpeedUps()` (utils/fast) to plug the speed-ups in.
"""

from __future__ import annotations

import torch

from utils.runtime.config import ModelConfig

TINY = dict(src_vocab_size=30, tgt_vocab_size=30, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
            dropout=0.0)  # fmt: skip


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def tiny_pytorch(seed: int = 0, speed=None, **overrides):
    from pytorch_version.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(tiny_config(**overrides)).eval()
    return speed.plug_in(model) if speed is not None else model


GPT = dict(arch="gpt", positions="rotary", activation="gelu", init="gpt2", norm_first=True)


def tiny_gpt(seed: int = 0, speed=None, **overrides):
    from pytorch_version.gpt import GPT as GPTModel

    torch.manual_seed(seed)
    model = GPTModel(tiny_config(**{**GPT, **overrides})).eval()
    return speed.plug_in(model) if speed is not None else model


def tiny_hf(attn: str = "sdpa", seed: int = 0, speed=None, **overrides):
    return tiny_twins(attn, seed, speed, **overrides)[1]


def tiny_twins(attn: str = "sdpa", seed: int = 0, speed=None, **overrides):
    """(pytorch model, HF model) holding the same weights."""
    from huggingface_version.convert import pytorch_to_hf

    pt = tiny_pytorch(seed, **overrides)
    hf = pytorch_to_hf(pt, attn_implementation=attn).eval()
    if speed is not None:
        speed.plug_in(pt)
        speed.plug_in(hf)
    return pt, hf


def tiny_gpt_twins(attn: str = "sdpa", seed: int = 0, **overrides):
    """(pytorch GPT, HF GPT) holding the same weights."""
    from huggingface_version.convert import pytorch_to_hf

    pt = tiny_gpt(seed, **overrides)
    return pt, pytorch_to_hf(pt, attn_implementation=attn).eval()


ENCODER = dict(positions="learned", activation="gelu", init="normal")
DIGITS = dict(src_vocab_size=1, tgt_vocab_size=1, pad_id=0, bos_id=0, eos_id=0, image_size=8, channels=1,
              labels=tuple("0123456789"))  # fmt: skip


def tiny_bert(seed: int = 0, **overrides):
    """pytorch_version's BERT: a masked LM over 30 ids ([CLS] 4, [MASK] 6), or with `labels=` a classifier."""
    from pytorch_version.encoder_only import BERT

    torch.manual_seed(seed)
    fields = {**ENCODER, "arch": "bert", "embedding_norm": True, "mask_id": 6, "cls_id": 4, **overrides}
    return BERT(tiny_config(**fields)).eval()


def tiny_vit(seed: int = 0, **overrides):
    """pytorch_version's ViT over 8x8 grey images (the digits' shape), patches of 2."""
    from pytorch_version.encoder_only import ViT

    torch.manual_seed(seed)
    return ViT(tiny_config(**{**ENCODER, **DIGITS, "arch": "vit", "norm_first": True, **overrides})).eval()


def tiny_encoder_twins(arch: str = "bert", attn: str = "sdpa", seed: int = 0, **overrides):
    """(pytorch BERT or ViT, the HF model with the same weights)."""
    from huggingface_version.convert import pytorch_to_hf

    pt = (tiny_vit if arch == "vit" else tiny_bert)(seed, **overrides)
    return pt, pytorch_to_hf(pt, attn_implementation=attn).eval()
