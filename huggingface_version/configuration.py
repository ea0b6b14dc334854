"""The model's shape as a Hugging Face config.

The fields are those of the toolkit's ModelConfig (utils/runtime/config.py, where each one's
why is written), under the same names, except the few that Hugging Face code reads under its
own: `TOOLKIT_NAMES` maps those, and `attribute_map` lets either name be read. This class is
the key table between the two: huggingface_version/convert.py builds one config from the
other field by field, and checks the values there, with the toolkit's one-line errors.

Like modeling.py, this file ships with a saved model and imports only transformers.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PreTrainedConfig

MODEL_TYPE = "tutorial_transformer"

# ModelConfig's name -> the name Hugging Face code reads (every other field has the same name)
TOOLKIT_NAMES: dict[str, str] = {
    "tie_output": "tie_word_embeddings",
    "pad_id": "pad_token_id",
    "bos_id": "bos_token_id",
    "eos_id": "eos_token_id",
}


class TutorialTransformerConfig(PreTrainedConfig):
    """Encoder-decoder Transformer of "Attention Is All You Need" (paper, section 3)."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache"]
    attribute_map: ClassVar[dict[str, str]] = {
        "num_hidden_layers": "num_layers",  # read by DynamicCache(config=...) and generate
        "num_attention_heads": "num_heads",
        "d_model": "hidden_size",
        "intermediate_size": "ffn_size",
        "max_position_embeddings": "max_position",
        "vocab_size": "tgt_vocab_size",  # the output vocabulary, what generate scores
        **TOOLKIT_NAMES,
    }

    # ModelConfig's fields and defaults (this family: the paper's choices only)
    arch: str = "transformer"
    positions: str = "sinusoidal"
    activation: str = "relu"
    init: str = "xavier"
    src_vocab_size: int = 30
    tgt_vocab_size: int = 30
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_position: int = 256
    norm_first: bool = False
    tie_word_embeddings: bool = True
    share_embeddings: bool = False
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    # Hugging Face's own
    decoder_start_token_id: int = 1  # the decoder's first input is BOS, as in pytorch_version
    is_encoder_decoder: bool = True
    use_cache: bool = True  # generate keeps keys and values between steps

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads
