"""The model's shape as a Hugging Face config: the same fields as utils.runtime.config.ModelConfig.

transformers 5 configs are dataclasses that keep unknown keyword arguments without a word,
so this class checks its own fields in `__post_init__` and raises a one-line `UserError`
(a ValueError) naming what was expected and what came, as the pytorch version does.
"""

from __future__ import annotations

import difflib
from typing import ClassVar

from transformers import PreTrainedConfig

from utils.runtime.config import ModelConfig, UserError

MODEL_TYPE = "tutorial_transformer"


class TutorialTransformerConfig(PreTrainedConfig):
    """Encoder-decoder Transformer of "Attention Is All You Need" (paper, section 3).

    Field names follow utils.runtime.config.ModelConfig; `attribute_map` adds the names other
    Hugging Face code reads (`num_hidden_layers`, `d_model`, `vocab_size`, ...).
    """

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache", "past_key_values"]  # 5.24 renamed it
    attribute_map: ClassVar[dict[str, str]] = {
        "num_hidden_layers": "num_layers",  # read by DynamicCache(config=...) and generate
        "num_attention_heads": "num_heads",
        "d_model": "hidden_size",
        "intermediate_size": "ffn_size",
        "max_position_embeddings": "max_position",
        "vocab_size": "tgt_vocab_size",  # the output vocabulary, what generate scores
        "tie_output": "tie_word_embeddings",  # the names utils.runtime.config.ModelConfig uses
        "pad_id": "pad_token_id",
        "bos_id": "bos_token_id",
        "eos_id": "eos_token_id",
    }

    src_vocab_size: int = 30  # size of the source token set
    tgt_vocab_size: int = 30  # size of the target token set
    hidden_size: int = 128  # d_model; the paper's base model uses 512
    num_layers: int = 2  # N, for the encoder and for the decoder; the paper uses 6
    num_heads: int = 4  # h; each head works in d_k = d_model / h dimensions
    ffn_size: int = 512  # d_ff, the inner size of the position-wise FFN (paper: 4 x d_model)
    dropout: float = 0.1  # P_drop on sublayer outputs and embeddings (section 5.4)
    attention_dropout: float = 0.0  # on attention weights; not in the paper (tensor2tensor has it)
    max_position: int = 256  # longest sequence the sinusoidal table covers
    norm_first: bool = False  # False: post-LN as in the paper. True: pre-LN, steadier when deep
    tie_word_embeddings: bool = True  # lm_head shares the target embedding matrix (section 3.4)
    share_embeddings: bool = False  # also share source and target embeddings (needs one vocabulary)
    pad_token_id: int = 0  # ids 0..3 match utils.data.tokenizer: <pad>, <s>, </s>, <unk>
    bos_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 1  # the decoder's first input is BOS, as in pytorch_version
    is_encoder_decoder: bool = True
    use_cache: bool = True  # generate keeps keys and values between steps

    def __post_init__(self, **kwargs):
        _reject_near_misses(kwargs, self)
        super().__post_init__(**kwargs)
        for name in ("src_vocab_size", "tgt_vocab_size", "hidden_size", "num_layers", "num_heads"):
            _require_positive(name, getattr(self, name))
        for name in ("ffn_size", "max_position"):
            _require_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size must be divisible by num_heads, got hidden_size={self.hidden_size} "
                f"and num_heads={self.num_heads}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError(
                "share_embeddings needs one vocabulary, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        if self.share_embeddings and not self.tie_word_embeddings:
            # Hugging Face ties weights only when tie_word_embeddings is set (PreTrainedModel.tie_weights)
            raise UserError(
                "share_embeddings=True needs tie_word_embeddings=True in the Hugging Face version"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.tgt_vocab_size:
                raise UserError(f"{name} must be an id in [0, {self.tgt_vocab_size}), got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> TutorialTransformerConfig:
        """The Hugging Face twin of a pytorch_version ModelConfig (same shape, same special ids)."""
        return cls(
            src_vocab_size=cfg.src_vocab_size,
            tgt_vocab_size=cfg.tgt_vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            ffn_size=cfg.ffn_size,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            max_position=cfg.max_position,
            norm_first=cfg.norm_first,
            tie_word_embeddings=cfg.tie_output,
            share_embeddings=cfg.share_embeddings,
            pad_token_id=cfg.pad_id,
            bos_token_id=cfg.bos_id,
            eos_token_id=cfg.eos_id,
            decoder_start_token_id=cfg.bos_id,
            **kwargs,
        )

    def to_model_config(self) -> ModelConfig:
        """Back to utils.runtime.config.ModelConfig, e.g. to build the pytorch_version twin."""
        return ModelConfig(
            src_vocab_size=self.src_vocab_size,
            tgt_vocab_size=self.tgt_vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            ffn_size=self.ffn_size,
            dropout=float(self.dropout),
            attention_dropout=float(self.attention_dropout),
            max_position=self.max_position,
            norm_first=self.norm_first,
            tie_output=self.tie_word_embeddings,
            share_embeddings=self.share_embeddings,
            pad_id=self.pad_token_id,
            bos_id=self.bos_token_id,
            eos_id=self.eos_token_id,
        )


def _require_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def _reject_near_misses(kwargs: dict, config: PreTrainedConfig) -> None:
    """A stray `num_layer=6` would be kept silently and ignored; name the field it resembles."""
    fields = [f for f in type(config).__dataclass_fields__ if not f.startswith("_")]
    for key in kwargs:
        if key in type(config).attribute_map:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close and close[0] != key:
            raise UserError(f"unknown config key {key!r}; did you mean {close[0]!r}?")
