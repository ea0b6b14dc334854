"""The model families, the one place a config picks its class (`--arch`), and the model a run builds."""

from __future__ import annotations

from pytorch_version.encoder_data import from_pretrained_encoder
from pytorch_version.encoder_only import BERT, ViT
from pytorch_version.gpt import GPT
from pytorch_version.model import Transformer, TutorialModel
from utils.fast import SpeedUps
from utils.runtime.config import ModelConfig, RunConfig

FAMILIES: dict[str, type[TutorialModel]] = {
    "transformer": Transformer,  # the paper's encoder-decoder
    "gpt": GPT,  # decoder-only
    "bert": BERT,  # encoder-only, over text: masked LM or classification
    "vit": ViT,  # encoder-only, over image patches: classification
}


def model_for(cfg: ModelConfig) -> TutorialModel:
    """A freshly initialised model of the family `cfg.arch` names."""
    return FAMILIES[cfg.arch](cfg)


def build_model(cfg: RunConfig, tokenizer, fields: dict | None = None) -> TutorialModel:
    """A freshly initialised model of the configured family and shape, with the speed-ups of utils/fast
    plugged in unless --no-fast (module swaps: the state dict is that of the readable model)."""
    ids = {
        "pad_id": tokenizer.pad_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        **(fields or {}),
    }
    if cfg.init_from:  # a classifier on a pre-trained masked LM's encoder (pytorch_version.encoder_data)
        return SpeedUps.from_flag(cfg.fast).plug_in(from_pretrained_encoder(cfg, ids))
    model = model_for(cfg.model_config(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, **ids))
    return SpeedUps.from_flag(cfg.fast).plug_in(model)
