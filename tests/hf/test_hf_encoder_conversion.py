"""The encoder-only key tables: pytorch_version's BERT and ViT and the Hugging Face models are one function.

Converted weights give equal logits both ways (atol 1e-5), with either attention kernel: the masked LM,
the classifier with [CLS] or mean pooling over padded rows, the ViT; and a bad config.json is one line.
"""

from __future__ import annotations

import pytest
import torch

from huggingface_version.configuration_encoder import TutorialBertConfig, TutorialViTConfig
from huggingface_version.convert import (
    BERT_KEY_TABLE,
    convert_key,
    hf_config_of,
    hf_to_pytorch,
    model_config_of,
    pytorch_to_hf,
)
from huggingface_version.modeling_encoder import (
    TutorialBertForMaskedLM,
    TutorialBertForSequenceClassification,
    TutorialViTForImageClassification,
)
from tests.factory import tiny_bert, tiny_encoder_twins, tiny_vit
from utils.runtime.config import UserError

pytestmark = pytest.mark.usefixtures("single_thread")

IDS = torch.tensor([[4, 7, 8, 9, 10, 11, 5], [4, 12, 13, 5, 0, 0, 0], [4, 14, 6, 15, 6, 5, 0]])  # padded
CASES = {
    "mlm": {},
    "cls": {"labels": ("no", "yes", "maybe")},
    "mean": {"labels": ("no", "yes"), "pooling": "mean"},
    "sinusoidal-preLN": {"positions": "sinusoidal", "norm_first": True},
}


def _hf_logits(hf, ids):
    return hf(input_ids=ids, attention_mask=(ids != 0).long()).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", list(CASES))
def test_bert_logits_agree_both_ways(case, attn):
    pt, hf = tiny_encoder_twins("bert", attn, **CASES[case])
    expected = type(hf) is (TutorialBertForSequenceClassification if "labels" in CASES[case] else
                            TutorialBertForMaskedLM)  # fmt: skip
    assert expected
    with torch.no_grad():
        ours, theirs = pt(IDS), _hf_logits(hf, IDS)
        real = IDS != 0
        if ours.dim() == 3:  # the masked LM: every real position (a pad's row is read by nothing)
            ours, theirs = ours[real], theirs[real]
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
        back = hf_to_pytorch(hf).eval()
        torch.testing.assert_close(back(IDS), pt(IDS), rtol=0, atol=1e-5)
    assert back.config == pt.config


def test_padding_changes_nothing_for_a_row_and_mean_pooling_leaves_pads_out():
    _, hf = tiny_encoder_twins("bert", labels=("a", "b"), pooling="mean")
    with torch.no_grad():
        alone = _hf_logits(hf, IDS[1:2, :4])
        padded = _hf_logits(hf, IDS)[1:2]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_vit_logits_agree_both_ways(attn):
    pt, hf = tiny_encoder_twins("vit", attn)
    assert isinstance(hf, TutorialViTForImageClassification)
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=images).logits, pt(images), rtol=0, atol=1e-5)
        back = hf_to_pytorch(hf).eval()
        torch.testing.assert_close(back(images), pt(images), rtol=0, atol=1e-5)
    assert back.config == pt.config


def test_every_parameter_has_a_row_and_the_mlm_output_stays_tied():
    pt = tiny_bert(positions="learned")
    names = [convert_key(name, arch="bert") for name in pt.state_dict()]
    assert "lm_head.decoder.weight" in names and "model.embed_positions.weight" in names
    hf = pytorch_to_hf(pt)
    assert hf.lm_head.decoder.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert ("head.output", "lm_head.decoder") in BERT_KEY_TABLE
    assert convert_key("model.cls_token", to_hf=False, arch="vit") == "cls_token"  # a bare parameter
    with pytest.raises(KeyError, match="VIT_KEY_TABLE"):
        convert_key("nowhere.weight", arch="vit")


def test_configs_round_trip_with_their_labels_and_ids():
    for pt in (tiny_bert(labels=("x", "y")), tiny_bert(), tiny_vit()):
        config = hf_config_of(pt.config)
        assert isinstance(config, TutorialViTConfig if pt.config.arch == "vit" else TutorialBertConfig)
        assert model_config_of(config) == pt.config
        assert config.num_labels == len(pt.config.labels)
    bert = hf_config_of(tiny_bert().config)
    assert (bert.mask_token_id, bert.cls_token_id, bert.mask_id) == (6, 4, 6)  # either name reads it


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": "gpt"}, "is for arch 'bert'"),
        ({"num_layer": 3}, "did you mean 'num_layers'"),
        ({"pooling": "max"}, "pooling must be one of cls, mean"),
        ({"positions": "rotary"}, "rotary is for --arch gpt"),
        ({"id2label": {0: "a", 2: "b"}}, "id2label must number the classes"),
    ],
)
def test_a_bad_encoder_config_is_one_line(change, message):
    config = TutorialBertConfig(**{**hf_config_of(tiny_bert(labels=("a", "b")).config).to_dict(), **change})
    with pytest.raises(UserError, match=message):
        model_config_of(config)


def test_no_special_id_is_none_for_transformers_and_minus_one_for_the_toolkit():
    vit = hf_config_of(tiny_vit().config)
    assert vit.mask_token_id is None and vit.cls_token_id is None  # transformers warns of -1
    assert model_config_of(vit).mask_id == -1
    bad = TutorialBertConfig(**{**hf_config_of(tiny_bert().config).to_dict(), "mask_token_id": 30})
    with pytest.raises(UserError, match=r"mask_token_id must be None or an id in \[0, 30\), got 30"):
        model_config_of(bad)
