"""The HF encoder-only models in transformers' conventions: output classes with the loss from `labels`,
eager and sdpa kernels, the Auto classes and save_pretrained / from_pretrained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)
from transformers.modeling_outputs import ImageClassifierOutput, MaskedLMOutput, SequenceClassifierOutput

from huggingface_version.configuration_encoder import TutorialBertConfig, TutorialViTConfig
from tests.factory import tiny_encoder_twins

pytestmark = pytest.mark.usefixtures("single_thread")
IDS = torch.tensor([[4, 7, 6, 9, 10, 5], [4, 12, 6, 5, 0, 0]])


def test_masked_lm_loss_counts_only_the_labelled_positions():
    _, hf = tiny_encoder_twins("bert")
    labels = torch.full_like(IDS, -100)
    labels[0, 2], labels[1, 2] = 8, 13  # the ids behind the two [MASK]s
    out = hf(input_ids=IDS, attention_mask=(IDS != 0).long(), labels=labels)
    assert isinstance(out, MaskedLMOutput) and out.logits.shape == (2, 6, 30)
    expected = F.cross_entropy(out.logits[:, 2], torch.tensor([8, 13]))
    torch.testing.assert_close(out.loss, expected)
    kept = hf(input_ids=IDS, logits_to_keep=labels != -100)  # the head on the labelled rows only
    assert kept.loss is None
    torch.testing.assert_close(kept.logits, out.logits[:, 2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifiers_return_transformers_outputs_and_their_loss(pooling):
    _, hf = tiny_encoder_twins("bert", labels=("no", "yes"), pooling=pooling)
    out = hf(input_ids=IDS, labels=torch.tensor([1, 0]))
    assert isinstance(out, SequenceClassifierOutput) and out.logits.shape == (2, 2)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([1, 0])))
    assert (hf.pooler.dense is None) == (pooling == "mean") and hf.config.id2label == {0: "no", 1: "yes"}
    _, vit = tiny_encoder_twins("vit")
    images = torch.rand(3, 1, 8, 8)
    out = vit(pixel_values=images, labels=torch.tensor([0, 5, 9]))
    assert isinstance(out, ImageClassifierOutput) and out.logits.shape == (3, 10) and out.loss > 0
    assert vit(pixel_values=images, return_dict=False)[0].shape == (3, 10)


@pytest.mark.parametrize("arch", ["bert", "vit"])
def test_eager_and_sdpa_agree_and_only_eager_returns_the_maps(arch):
    _, sdpa = tiny_encoder_twins(arch, "sdpa", labels=("a", "b"))
    _, eager = tiny_encoder_twins(arch, "eager", labels=("a", "b"))
    inputs = {"pixel_values": torch.rand(2, 1, 8, 8)} if arch == "vit" else {"input_ids": IDS}
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True, output_hidden_states=True)
        torch.testing.assert_close(sdpa(**inputs).logits, out.logits, rtol=0, atol=1e-5)
    S = 17 if arch == "vit" else 6  # [CLS] and 16 patches of 2 x 2
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, S, S)
    assert len(out.hidden_states) == 3  # the embeddings, then each layer's output
    if arch == "bert":  # no token looks at a pad
        assert out.attentions[0][1, :, :, 4:].abs().max() == 0
    with pytest.raises(ValueError, match="needs the eager attention kernel"):
        sdpa(**inputs, output_attentions=True)


def test_a_vit_refuses_images_of_another_shape():
    _, vit = tiny_encoder_twins("vit")
    with pytest.raises(ValueError, match=r"\(channels, height, width\) \(1, 8, 8\), got \(3, 8, 8\)"):
        vit(pixel_values=torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize(
    "arch, overrides, auto, config_class",
    [
        ("bert", {}, AutoModelForMaskedLM, TutorialBertConfig),
        ("bert", {"labels": ("no", "yes"), "pooling": "mean"}, AutoModelForSequenceClassification,
         TutorialBertConfig),
        ("vit", {}, AutoModelForImageClassification, TutorialViTConfig),
    ],
    ids=["mlm", "classifier", "vit"],
)  # fmt: skip
def test_save_then_auto_load_round_trip(tmp_path, arch, overrides, auto, config_class):
    _, hf = tiny_encoder_twins(arch, **overrides)
    hf.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is config_class
    loaded, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is type(hf)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs = {"pixel_values": torch.rand(2, 1, 8, 8)} if arch == "vit" else {"input_ids": IDS}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, hf(**inputs).logits, rtol=0, atol=0)
    if arch == "bert" and not overrides:
        assert loaded.lm_head.decoder.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
