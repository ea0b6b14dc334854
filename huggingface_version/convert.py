"""Configs and weights from pytorch_version to the Hugging Face model and back: key tables, not code.

The config: every ModelConfig field has the same name in TutorialTransformerConfig (and, but for the
one `vocab_size` of a GPT, in TutorialGPTConfig) except those in configuration.TOOLKIT_NAMES;
`hf_config_of` and `model_config_of` go field by field, and `model_config_of` is where a Hugging
Face config is checked (ModelConfig's one-line errors).

Both versions hold the same tensors under different module paths. Each row of KEY_TABLE
maps a module path of pytorch_version to the Hugging Face one; `{i}` stands for a layer
number, and what follows the path (`.weight`, `.bias`, `.q_proj.weight`, ...) carries over
unchanged. No tensor is reshaped or transposed: both store nn.Linear weights as (out, in).
Each family has its table (KEY_TABLES, chosen by the config's `arch`): KEY_TABLE for the paper's
encoder-decoder, GPT_KEY_TABLE for the decoder-only GPT (pytorch_version/gpt.py <-> modeling_gpt.py),
BERT_KEY_TABLE and VIT_KEY_TABLE for the encoder-only family (pytorch_version/encoder_only.py <->
modeling_encoder.py; configuration_encoder.ENCODER_NAMES holds the fields named otherwise there).
"""

from __future__ import annotations

import dataclasses
import difflib
import re

import torch

from huggingface_version.configuration import TOOLKIT_NAMES, TutorialTransformerConfig
from huggingface_version.configuration_encoder import (
    BERT_MODEL_TYPE,
    ENCODER_NAMES,
    VIT_MODEL_TYPE,
    TutorialBertConfig,
    TutorialEncoderConfig,
    TutorialViTConfig,
)
from huggingface_version.configuration_gpt import TutorialGPTConfig
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from huggingface_version.modeling_encoder import (
    TutorialBertForMaskedLM,
    TutorialBertForSequenceClassification,
    TutorialEncoderPreTrainedModel,
    TutorialViTForImageClassification,
)
from huggingface_version.modeling_gpt import TutorialGPTForCausalLM
from pytorch_version.families import model_for
from pytorch_version.model import TutorialModel
from utils.runtime.config import ModelConfig, UserError
from utils.runtime.shape import LAB_FIELDS

HFModel = (
    TutorialTransformerForConditionalGeneration | TutorialGPTForCausalLM | TutorialEncoderPreTrainedModel
)
HF_CLASSES = {
    "transformer": TutorialTransformerForConditionalGeneration,
    "gpt": TutorialGPTForCausalLM,
    "bert": TutorialBertForSequenceClassification,  # hf_class_for: the masked LM when there are no labels
    "vit": TutorialViTForImageClassification,
}


def hf_class_for(arch: str, labelled: bool = True) -> type:
    """The Hugging Face class of a family; BERT's without labels is the masked LM."""
    return TutorialBertForMaskedLM if arch == "bert" and not labelled else HF_CLASSES[arch]


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

GPT_KEY_TABLE: list[tuple[str, str]] = [
    # (pytorch_version.gpt module path,  Hugging Face (modeling_gpt) module path)
    ("tgt_embed.embedding", "model.embed_tokens"),
    ("positions.embedding", "model.embed_positions"),  # learned positions only
    ("lm_head", "lm_head"),
    ("decoder.layers.{i}.self_attn", "model.layers.{i}.self_attn"),  # q/k/v/out_proj inside
    ("decoder.layers.{i}.norm1", "model.layers.{i}.self_attn_layer_norm"),
    ("decoder.layers.{i}.ffn.fc1", "model.layers.{i}.fc1"),
    ("decoder.layers.{i}.ffn.fc2", "model.layers.{i}.fc2"),
    ("decoder.layers.{i}.norm2", "model.layers.{i}.final_layer_norm"),
    ("decoder.norm", "model.layer_norm"),  # pre-LN only
]

_ENCODER_LAYERS: list[tuple[str, str]] = [
    ("encoder.layers.{i}.self_attn", "model.layers.{i}.self_attn"),  # q/k/v/out_proj inside
    ("encoder.layers.{i}.norm1", "model.layers.{i}.self_attn_layer_norm"),
    ("encoder.layers.{i}.ffn.fc1", "model.layers.{i}.fc1"),
    ("encoder.layers.{i}.ffn.fc2", "model.layers.{i}.fc2"),
    ("encoder.layers.{i}.norm2", "model.layers.{i}.final_layer_norm"),
    ("encoder.norm", "model.layer_norm"),  # pre-LN only
    ("positions.embedding", "model.embed_positions"),  # learned positions only
    ("head.pooler", "pooler.dense"),  # [CLS] pooling of a BERT classifier only
    ("head.classifier", "classifier"),
]

BERT_KEY_TABLE: list[tuple[str, str]] = [
    # (pytorch_version.encoder_only.BERT,  Hugging Face (modeling_encoder) module path)
    ("src_embed.embedding", "model.embed_tokens"),
    ("embed_norm", "model.embed_layer_norm"),  # --embedding_norm only
    *_ENCODER_LAYERS,
    ("head.dense", "lm_head.dense"),  # the masked-LM head
    ("head.norm", "lm_head.layer_norm"),
    ("head.output", "lm_head.decoder"),  # its weight is the embedding's (tied)
]

VIT_KEY_TABLE: list[tuple[str, str]] = [
    # (pytorch_version.encoder_only.ViT,   Hugging Face (modeling_encoder) module path)
    ("patch_embed.projection", "model.patch_embeddings.projection"),
    ("cls_token", "model.cls_token"),  # a parameter itself, not a module
    *_ENCODER_LAYERS,
]

KEY_TABLES: dict[str, list[tuple[str, str]]] = {"transformer": KEY_TABLE, "gpt": GPT_KEY_TABLE,
                                                "bert": BERT_KEY_TABLE, "vit": VIT_KEY_TABLE}  # fmt: skip
TABLE_NAMES = {"transformer": "KEY_TABLE", "gpt": "GPT_KEY_TABLE", "bert": "BERT_KEY_TABLE",
               "vit": "VIT_KEY_TABLE"}  # fmt: skip
GPT_ONLY = ("src_vocab_size", "tgt_vocab_size", "share_embeddings")  # ModelConfig's, not a GPT config's
NO_ID_IS_NONE = ("mask_token_id", "cls_token_id")
ENCODER_ONLY_FIELDS = (*GPT_ONLY, "labels")  # ModelConfig's that an encoder config holds otherwise
# ModelConfig's that only the encoder-only configs hold: the other families take their defaults
ENCODER_FIELDS = ("embedding_norm", "pooling", "patch_size", "labels", "mask_id", "cls_id", "image_size",
                  "channels")  # fmt: skip


def hf_config_of(cfg: ModelConfig, **kwargs) -> TutorialTransformerConfig | TutorialGPTConfig:
    """The Hugging Face twin of a ModelConfig (same shape, same special ids), of the family `cfg.arch`:
    the encoder-decoder's decoder starts at BOS; a GPT has one vocabulary, `vocab_size`."""
    if cfg.ablations():  # a lab model (pytorch_version/lab) has parts the Hugging Face classes do not
        raise UserError(f"the paper lab's ablations ({', '.join(cfg.ablations())}) exist in pytorch_version "
                        "only; the Hugging Face version builds the model as the paper does")  # fmt: skip
    settings = {k: v for k, v in cfg.to_dict().items() if k not in LAB_FIELDS}
    if cfg.arch in ("bert", "vit"):
        shape = {k: v for k, v in settings.items() if k not in ENCODER_ONLY_FIELDS}
        fields = {ENCODER_NAMES.get(k, k): v for k, v in shape.items()}
        for name in NO_ID_IS_NONE:  # the toolkit's -1 (no such token) is transformers' None
            fields[name] = None if fields[name] == -1 else fields[name]
        names = cfg.labels
        labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
        config_class = TutorialViTConfig if cfg.arch == "vit" else TutorialBertConfig
        return config_class(**fields, vocab_size=cfg.vocab_size, **labels, **kwargs)
    fields = {TOOLKIT_NAMES.get(name, name): value for name, value in settings.items()}
    if cfg.arch == "gpt":
        fields = {k: v for k, v in fields.items() if k not in GPT_ONLY}
        return TutorialGPTConfig(**fields, vocab_size=cfg.vocab_size, **kwargs)
    return TutorialTransformerConfig(**fields, decoder_start_token_id=cfg.bos_id, **kwargs)


def model_config_of(config) -> ModelConfig:
    """Back to a ModelConfig, checking every value: the one-line UserError of a bad config.json."""
    _reject_near_misses(config)
    # an encoder-only config (also a copy of its class run as remote code: another class, the same type)
    if isinstance(config, TutorialEncoderConfig) or config.model_type in (BERT_MODEL_TYPE, VIT_MODEL_TYPE):
        return _encoder_config_of(config)
    # the class decides the family, and `arch` must agree; a copy of a config run as remote code (another
    # class) is a GPT's when it says so
    gpt = isinstance(config, TutorialGPTConfig) or (
        not isinstance(config, TutorialTransformerConfig) and getattr(config, "arch", None) == "gpt"
    )
    family = "gpt" if gpt else "transformer"
    if config.arch != family:
        raise UserError(f"a {config.model_type} config is for arch {family!r}, got arch={config.arch!r}")
    names = [name for name in ModelConfig.__dataclass_fields__
             if not (gpt and name in GPT_ONLY) and name not in (*ENCODER_FIELDS, *LAB_FIELDS)]  # fmt: skip
    values = {name: getattr(config, TOOLKIT_NAMES.get(name, name)) for name in names}
    if gpt:  # one vocabulary, read and written
        values |= {"src_vocab_size": config.vocab_size, "tgt_vocab_size": config.vocab_size}
    for name in ("dropout", "attention_dropout"):  # JSON may hold 0 for 0.0
        if isinstance(values[name], int) and not isinstance(values[name], bool):
            values[name] = float(values[name])
    cfg = ModelConfig(**values)
    if gpt:
        return cfg
    start = config.decoder_start_token_id
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < cfg.tgt_vocab_size:
        raise UserError(f"decoder_start_token_id must be an id in [0, {cfg.tgt_vocab_size}), got {start!r}")
    if cfg.share_embeddings and not cfg.tie_output:
        # Hugging Face ties weights only when tie_word_embeddings is set (PreTrainedModel.tie_weights)
        raise UserError("share_embeddings=True needs tie_word_embeddings=True in the Hugging Face version")
    return cfg


def _encoder_config_of(config: TutorialEncoderConfig) -> ModelConfig:
    """An encoder-only config (a classifier's labels from id2label, in id order) as a ModelConfig."""
    family = "vit" if config.model_type == VIT_MODEL_TYPE else "bert"
    if config.arch != family:
        raise UserError(f"a {config.model_type} config is for arch {family!r}, got arch={config.arch!r}")
    names = [
        name for name in ModelConfig.__dataclass_fields__ if name not in (*ENCODER_ONLY_FIELDS, *LAB_FIELDS)
    ]
    values = {name: getattr(config, ENCODER_NAMES.get(name, name)) for name in names}
    for name in ("dropout", "attention_dropout"):  # JSON may hold 0 for 0.0
        if isinstance(values[name], int) and not isinstance(values[name], bool):
            values[name] = float(values[name])
    vocab = config.vocab_size
    for name in ("mask_id", "cls_id"):
        value = values[name]
        is_id = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab
        if value is not None and not is_id:
            raise UserError(f"{ENCODER_NAMES[name]} must be None or an id in [0, {vocab}), got {value!r}")
        values[name] = -1 if value is None else value
    id2label = config.id2label or {}
    if sorted(id2label) != list(range(len(id2label))):
        ids = sorted(id2label)
        raise UserError(f"id2label must number the classes 0..{len(id2label) - 1}, got ids {ids}")
    labels = tuple(str(id2label[i]) for i in range(len(id2label)))
    return ModelConfig(**values, src_vocab_size=vocab, tgt_vocab_size=vocab, labels=labels)


def _reject_near_misses(config: TutorialTransformerConfig) -> None:
    """A stray `num_layer=6` is kept by transformers without a word and ignored; name the field it
    resembles."""
    fields = [f for f in type(config).__dataclass_fields__ if not f.startswith("_")]
    for key in vars(config):
        if key in fields or key.startswith("_") or key in type(config).attribute_map:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close:
            raise UserError(f"unknown config key {key!r}; did you mean {close[0]!r}?")


def _compile(pattern: str) -> re.Pattern:
    """`encoder.layers.{i}.norm1` -> a regex matching `encoder.layers.3.norm1.weight` (i=3, rest=.weight)."""
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<rest>(\..+)?)$")


def convert_key(name: str, to_hf: bool = True, arch: str = "transformer") -> str:
    """One parameter name in one version -> its name in the other, by the table of the family `arch`;
    KeyError if no row covers it."""
    for pt_pattern, hf_pattern in KEY_TABLES[arch]:
        source, target = (pt_pattern, hf_pattern) if to_hf else (hf_pattern, pt_pattern)
        match = _compile(source).match(name)
        if match:
            i = match.groupdict().get("i")
            return (target.format(i=i) if i is not None else target) + match["rest"]
    side = "pytorch" if to_hf else "Hugging Face"
    raise KeyError(f"no row of {TABLE_NAMES[arch]} covers the {side} key {name!r}")


def convert_state_dict(
    state: dict[str, torch.Tensor], to_hf: bool = True, arch: str = "transformer"
) -> dict[str, torch.Tensor]:
    return {convert_key(name, to_hf, arch): tensor for name, tensor in state.items()}


def pytorch_to_hf(pt_model: TutorialModel, attn_implementation: str = "sdpa") -> HFModel:
    """A Hugging Face model holding copies of `pt_model`'s weights (same logits, same outputs): a
    TutorialTransformerForConditionalGeneration, a GPT's TutorialGPTForCausalLM, a BERT's
    TutorialBertForMaskedLM (no labels) or ...ForSequenceClassification, a ViT's
    TutorialViTForImageClassification."""
    arch = pt_model.config.arch
    config = hf_config_of(pt_model.config)
    hf_class = hf_class_for(arch, bool(pt_model.config.labels))
    hf_model = hf_class._from_config(config, attn_implementation=attn_implementation)
    state = convert_state_dict(pt_model.state_dict(), to_hf=True, arch=arch)
    hf_model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf_model.to(next(pt_model.parameters()).device).train(pt_model.training)


def hf_to_pytorch(hf_model: HFModel) -> TutorialModel:
    """A pytorch_version model (Transformer, GPT, BERT or ViT, by the config's arch) holding copies of
    `hf_model`'s weights."""
    cfg = model_config_of(hf_model.config)
    if type(hf_model).__name__.endswith("ForMaskedLM"):  # (also a copy of the class run as remote code)
        cfg = dataclasses.replace(cfg, labels=())  # the head decides, whatever id2label says
    pt_model = model_for(cfg)
    state = convert_state_dict(hf_model.state_dict(), to_hf=False, arch=cfg.arch)
    pt_model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return pt_model.to(hf_model.device).train(hf_model.training)
