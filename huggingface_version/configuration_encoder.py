"""The encoder-only family's shape as Hugging Face configs: BERT over text, the Vision Transformer (images).

Two model types, because transformers maps one `model_type` to one config class and the Auto classes
pick a model by config class: "tutorial_bert" (TutorialBertConfig: a masked LM, or a sequence
classifier when it has labels) and "tutorial_vit" (TutorialViTConfig: an image classifier). Both hold
the same fields, those of the toolkit's ModelShape (utils/runtime/shape.py, where each one's why is
written) with each family's defaults (`arch_defaults` there), plus ModelConfig's vocabulary, longest
input and special ids, as configuration_gpt.py does for the GPT.

    toolkit (ModelConfig)      here
    src/tgt_vocab_size         vocab_size (one vocabulary; a ViT has none and keeps 1)
    max_position               max_position (max_position_embeddings reads it)
    pad_id, bos_id, eos_id     pad_token_id, bos_token_id, eos_token_id (configuration.TOOLKIT_NAMES)
    mask_id, cls_id            mask_token_id, cls_token_id (ModelConfig's -1, none, is None here)
    labels                     id2label / label2id (the classes, in id order; none: the masked LM)
    channels                   num_channels (as transformers' ViTConfig); image_size, patch_size as they are
    tie_output                 tie_word_embeddings (the masked-LM head's output reads the embedding)

Like modeling_encoder.py, this file ships with a saved model and imports only transformers (and its
sibling configuration.py, for the shared names). It checks nothing: huggingface_version/convert.py's
`model_config_of` checks a loaded config with the toolkit's one-line errors.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PreTrainedConfig

from .configuration import TOOLKIT_NAMES

BERT_MODEL_TYPE, VIT_MODEL_TYPE = "tutorial_bert", "tutorial_vit"

# ModelConfig's name -> the name here, for every field whose name differs
ENCODER_NAMES: dict[str, str] = {
    **TOOLKIT_NAMES,
    "mask_id": "mask_token_id",
    "cls_id": "cls_token_id",
    "channels": "num_channels",
}


class TutorialEncoderConfig(PreTrainedConfig):
    """What BERT and ViT configs share: ModelShape's fields and the ids; each subclass sets its defaults."""

    attribute_map: ClassVar[dict[str, str]] = {
        "num_hidden_layers": "num_layers",  # transformers' names, readable too
        "num_attention_heads": "num_heads",
        "intermediate_size": "ffn_size",
        "max_position_embeddings": "max_position",
        **ENCODER_NAMES,
    }

    # ModelShape's fields
    arch: str = "bert"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm_first: bool = False  # BERT: post-LN, as the paper; ViT: pre-LN with a last LayerNorm
    positions: str = "learned"  # or "sinusoidal" (the paper's table)
    activation: str = "gelu"  # or "relu"
    init: str = "normal"  # N(0, 0.02); or "xavier"
    embedding_norm: bool = True  # BERT's LayerNorm on the summed embeddings
    pooling: str = "cls"  # a classifier reads [CLS] (through a tanh pooler) or the mean of the real tokens
    patch_size: int = 2  # ViT's square patches
    tie_word_embeddings: bool = True
    # ModelConfig's: the vocabulary, the longest input, the special ids, the images
    vocab_size: int = 30
    max_position: int = 256
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    mask_token_id: int | None = None  # [MASK] (ModelConfig's -1: None, what transformers expects for none)
    cls_token_id: int | None = None  # [CLS], the first token of every input
    image_size: int = 0
    num_channels: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_patches(self) -> int:
        """ViT: the tokens of one image besides [CLS]."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes in id order ((): the masked LM's head)."""
        id2label = self.id2label or {}
        return tuple(id2label[i] for i in range(len(id2label)))


class TutorialBertConfig(TutorialEncoderConfig):
    """BERT (Devlin et al. 2019): an encoder over text, a masked LM or (with labels) a sequence classifier."""

    model_type = BERT_MODEL_TYPE


class TutorialViTConfig(TutorialEncoderConfig):
    """The Vision Transformer (Dosovitskiy et al. 2021): image patches as tokens, a classifier on [CLS]."""

    model_type = VIT_MODEL_TYPE
    arch: str = "vit"
    norm_first: bool = True
    embedding_norm: bool = False
    vocab_size: int = 1  # no vocabulary: pixels are read as they are (utils.data.digits.PatchTokenizer)
    bos_token_id: int = 0  # nor special ids: they all name the one id
    eos_token_id: int = 0
    image_size: int = 8
    num_channels: int = 1
