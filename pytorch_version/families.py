"""The model families and the one place a config picks its class (`--arch`)."""

from __future__ import annotations

from pytorch_version.encoder_only import BERT, ViT
from pytorch_version.gpt import GPT
from pytorch_version.model import Transformer, TutorialModel
from utils.runtime.config import ModelConfig

FAMILIES: dict[str, type[TutorialModel]] = {
    "transformer": Transformer,  # the paper's encoder-decoder
    "gpt": GPT,  # decoder-only
    "bert": BERT,  # encoder-only, over text: masked LM or classification
    "vit": ViT,  # encoder-only, over image patches: classification
}


def model_for(cfg: ModelConfig) -> TutorialModel:
    """A freshly initialised model of the family `cfg.arch` names."""
    return FAMILIES[cfg.arch](cfg)
