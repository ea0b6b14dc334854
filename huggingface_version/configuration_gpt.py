"""The decoder-only GPT's shape as a Hugging Face config.

The fields are those of the toolkit's ModelShape (utils/runtime/config.py, where each one's why is
written), under the same names, with this family's defaults (`arch_defaults` there: rotary positions,
GELU, GPT-2's initialisation, pre-LN), plus the one vocabulary (`vocab_size`: a GPT reads and writes
the same tokens), the longest context (`max_position`) and the special ids. As in configuration.py,
`TOOLKIT_NAMES` maps the four fields that transformers reads under its own names, and `attribute_map`
lets either name be read: `DynamicCache(config=...)` and `generate` ask for `num_hidden_layers`.

Like modeling_gpt.py, this file ships with a saved model and imports only transformers (and its
sibling configuration.py, for the shared names). It checks nothing: huggingface_version/convert.py's
`model_config_of` checks a loaded config with the toolkit's one-line errors.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PreTrainedConfig

from .configuration import TOOLKIT_NAMES

MODEL_TYPE = "tutorial_gpt"


class TutorialGPTConfig(PreTrainedConfig):
    """Decoder-only Transformer: one stack of masked self-attention layers over prompt and output."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache"]
    attribute_map: ClassVar[dict[str, str]] = {
        "num_hidden_layers": "num_layers",  # read by DynamicCache(config=...) and generate
        "num_attention_heads": "num_heads",
        "d_model": "hidden_size",
        "intermediate_size": "ffn_size",
        "max_position_embeddings": "max_position",
        **TOOLKIT_NAMES,
    }

    # ModelShape's fields, with the GPT family's defaults
    arch: str = "gpt"
    positions: str = "rotary"  # or "learned" (GPT-2), "sinusoidal" (the paper's table)
    activation: str = "gelu"  # or "relu"
    init: str = "gpt2"  # N(0, 0.02), residual projections 1/sqrt(2 N); or "xavier"
    norm_first: bool = True  # pre-LN, and one last LayerNorm after the stack (GPT-2's ln_f)
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    # ModelConfig's: one vocabulary, the context, the output layer, the special ids
    vocab_size: int = 30
    max_position: int = 256
    tie_word_embeddings: bool = True  # lm_head reads the embedding matrix (GPT-2 too)
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    # Hugging Face's own
    use_cache: bool = True  # generate keeps keys and values between steps

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads
