"""The encoder-only models against code no one here wrote: transformers' BertForMaskedLM,
BertForSequenceClassification and ViTForImageClassification with copied weights, and the lecture's
nn.TransformerEncoder classifier (mean pooling)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

from pytorch_version.families import model_for
from utils.runtime.config import ModelConfig

D, L, H, F, V = 32, 2, 4, 64, 40


def bert_config(**extra) -> ModelConfig:
    return ModelConfig(arch="bert", hidden_size=D, num_layers=L, num_heads=H, ffn_size=F, positions="learned",
                       activation="gelu", init="normal", embedding_norm=True, dropout=0.0, src_vocab_size=V,
                       tgt_vocab_size=V, max_position=32, **extra)  # fmt: skip


def hf_bert_config(**extra) -> BertConfig:
    return BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                      intermediate_size=F, max_position_embeddings=32, type_vocab_size=1, layer_norm_eps=1e-5,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, hidden_act="gelu",
                      pad_token_id=0, **extra)  # fmt: skip


def layer_keys(ours: str, theirs: str, pre_ln: bool) -> dict[str, str]:
    """Our encoder layer's parameter names -> BERT's (post-LN) or ViT's (pre-LN, transformers 5 names)."""
    if pre_ln:
        names = {"self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
                 "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.o_proj",
                 "ffn.fc1": "mlp.fc1", "ffn.fc2": "mlp.fc2", "norm1": "layernorm_before",
                 "norm2": "layernorm_after"}  # fmt: skip
    else:
        names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
                 "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
                 "ffn.fc1": "intermediate.dense", "ffn.fc2": "output.dense",
                 "norm1": "attention.output.LayerNorm", "norm2": "output.LayerNorm"}  # fmt: skip
    return {f"{ours}.{a}.{p}": f"{theirs}.{b}.{p}" for a, b in names.items() for p in ("weight", "bias")}


def copy_into(theirs: nn.Module, ours: nn.Module, table: dict[str, str], reshape=()) -> None:
    state = ours.state_dict()
    target = theirs.state_dict()
    with torch.no_grad():
        for mine, name in table.items():
            value = state[mine]
            target[name].copy_(value.reshape(target[name].shape))
    theirs.load_state_dict(target)


def bert_table(model, prefix="bert") -> dict[str, str]:
    table = {"src_embed.embedding.weight": f"{prefix}.embeddings.word_embeddings.weight",
             "positions.embedding.weight": f"{prefix}.embeddings.position_embeddings.weight",
             "embed_norm.weight": f"{prefix}.embeddings.LayerNorm.weight",
             "embed_norm.bias": f"{prefix}.embeddings.LayerNorm.bias"}  # fmt: skip
    for i in range(L):
        table |= layer_keys(f"encoder.layers.{i}", f"{prefix}.encoder.layer.{i}", pre_ln=False)
    return table


def test_bert_masked_lm_equals_transformers():
    torch.manual_seed(0)
    ours = model_for(bert_config()).eval()
    theirs = BertForMaskedLM(hf_bert_config()).eval()
    with torch.no_grad():
        theirs.bert.embeddings.token_type_embeddings.weight.zero_()  # token types off
    table = bert_table(ours) | {"head.dense.weight": "cls.predictions.transform.dense.weight",
                                "head.dense.bias": "cls.predictions.transform.dense.bias",
                                "head.norm.weight": "cls.predictions.transform.LayerNorm.weight",
                                "head.norm.bias": "cls.predictions.transform.LayerNorm.bias",
                                "head.output.bias": "cls.predictions.bias"}  # fmt: skip
    copy_into(theirs, ours, table)
    ids = torch.randint(4, V, (3, 11))
    ids[1, 7:] = 0  # padding: their attention mask, our pad id
    with torch.no_grad():
        mine = ours(ids)
        reference = theirs(input_ids=ids, attention_mask=(ids != 0).long()).logits
    real = ids != 0
    assert torch.allclose(mine[real], reference[real], atol=1e-5)
    assert (
        theirs.cls.predictions.decoder.weight.data_ptr()
        == theirs.bert.embeddings.word_embeddings.weight.data_ptr()
    )


def test_bert_classifier_equals_transformers():
    torch.manual_seed(1)
    ours = model_for(bert_config(labels=("no", "yes", "maybe"))).eval()
    theirs = BertForSequenceClassification(hf_bert_config(num_labels=3)).eval()
    with torch.no_grad():
        theirs.bert.embeddings.token_type_embeddings.weight.zero_()
    table = bert_table(ours) | {"head.pooler.weight": "bert.pooler.dense.weight",
                                "head.pooler.bias": "bert.pooler.dense.bias",
                                "head.classifier.weight": "classifier.weight",
                                "head.classifier.bias": "classifier.bias"}  # fmt: skip
    copy_into(theirs, ours, table)
    ids = torch.randint(4, V, (4, 9))
    ids[2, 5:] = 0
    with torch.no_grad():
        assert torch.allclose(
            ours(ids), theirs(input_ids=ids, attention_mask=(ids != 0).long()).logits, atol=1e-5
        )


class LectureClassifier(nn.Module):
    """The lecture's TransformerClassifier: embedding, positions, nn.TransformerEncoder, mean, Linear."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, D)
        self.positions = nn.Embedding(32, D)
        layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation="relu", batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        self.fc = nn.Linear(D, num_classes)

    def forward(self, x):
        h = self.embedding(x) + self.positions(torch.arange(x.size(1)))
        return self.fc(self.transformer_encoder(h).mean(dim=1))


def test_mean_pooling_equals_the_lectures_classifier():
    torch.manual_seed(2)
    cfg = ModelConfig(arch="bert", hidden_size=D, num_layers=L, num_heads=H, ffn_size=F, positions="learned",
                      activation="relu", init="normal", dropout=0.0, pooling="mean", src_vocab_size=V,
                      tgt_vocab_size=V, max_position=32, labels=("a", "b"))  # fmt: skip
    ours = model_for(cfg).eval()
    lecture = LectureClassifier(2).eval()
    table = {"src_embed.embedding.weight": "embedding.weight",
             "positions.embedding.weight": "positions.weight",
             "head.classifier.weight": "fc.weight", "head.classifier.bias": "fc.bias"}  # fmt: skip
    theirs = lecture.state_dict()
    mine = ours.state_dict()
    with torch.no_grad():
        for ours_name, their_name in table.items():
            theirs[their_name].copy_(mine[ours_name])
        for i in range(L):
            p, t = f"encoder.layers.{i}", f"transformer_encoder.layers.{i}"
            qkv = [mine[f"{p}.self_attn.{n}_proj.weight"] for n in "qkv"]
            theirs[f"{t}.self_attn.in_proj_weight"].copy_(torch.cat(qkv))
            theirs[f"{t}.self_attn.in_proj_bias"].copy_(
                torch.cat([mine[f"{p}.self_attn.{n}_proj.bias"] for n in "qkv"])
            )
            pairs = (("self_attn.out_proj", "self_attn.out_proj"), ("ffn.fc1", "linear1"),
                     ("ffn.fc2", "linear2"), ("norm1", "norm1"), ("norm2", "norm2"))  # fmt: skip
            for a, b in pairs:
                for w in ("weight", "bias"):
                    theirs[f"{t}.{b}.{w}"].copy_(mine[f"{p}.{a}.{w}"])
    lecture.load_state_dict(theirs)
    ids = torch.randint(4, V, (3, 10))  # no padding: the lecture's mean counts every position
    with torch.no_grad():
        assert torch.allclose(ours(ids), lecture(ids), atol=1e-5)


@pytest.mark.parametrize("patch", [2, 4])
def test_vit_equals_transformers(patch):
    torch.manual_seed(3)
    cfg = ModelConfig(arch="vit", hidden_size=D, num_layers=L, num_heads=H, ffn_size=F, positions="learned",
                      activation="gelu", init="normal", norm_first=True, dropout=0.0, patch_size=patch,
                      src_vocab_size=1, tgt_vocab_size=1, pad_id=0, bos_id=0, eos_id=0, image_size=8,
                      channels=1, labels=tuple("0123456789"))  # fmt: skip
    ours = model_for(cfg).eval()
    theirs = ViTForImageClassification(ViTConfig(
        hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=F, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5, image_size=8,
        patch_size=patch, num_channels=1, num_labels=10)).eval()  # fmt: skip
    table = {"cls_token": "vit.embeddings.cls_token",
             "positions.embedding.weight": "vit.embeddings.position_embeddings",
             "patch_embed.projection.weight": "vit.embeddings.patch_embeddings.projection.weight",
             "patch_embed.projection.bias": "vit.embeddings.patch_embeddings.projection.bias",
             "encoder.norm.weight": "vit.layernorm.weight", "encoder.norm.bias": "vit.layernorm.bias",
             "head.classifier.weight": "classifier.weight",
             "head.classifier.bias": "classifier.bias"}  # fmt: skip
    for i in range(L):
        table |= layer_keys(f"encoder.layers.{i}", f"vit.layers.{i}", pre_ln=True)
    copy_into(theirs, ours, table)
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(ours(images), theirs(pixel_values=images).logits, atol=1e-5)
    assert math.isclose(cfg.num_patches, (8 // patch) ** 2)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_is_never_attended(pooling):
    """A sequence's outputs do not depend on how much padding follows it."""
    torch.manual_seed(4)
    mlm = model_for(bert_config()).eval()
    classifier = model_for(bert_config(labels=("a", "b"), pooling=pooling)).eval()
    ids = torch.randint(4, V, (1, 7))
    longer = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(mlm(ids)[0], mlm(longer)[0, :7], atol=1e-5)
        assert torch.allclose(classifier(ids), classifier(longer), atol=1e-5)
