"""The model families and the one place a config picks its class (`--arch`)."""

from __future__ import annotations

from pytorch_version.gpt import GPT
from pytorch_version.model import Transformer, TutorialModel
from utils.runtime.config import ModelConfig

FAMILIES: dict[str, type[TutorialModel]] = {
    "transformer": Transformer,  # the paper's encoder-decoder
    "gpt": GPT,  # decoder-only
}


def model_for(cfg: ModelConfig) -> TutorialModel:
    """A freshly initialised model of the family `cfg.arch` names."""
    return FAMILIES[cfg.arch](cfg)
