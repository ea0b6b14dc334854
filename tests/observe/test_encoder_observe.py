"""Every observation tool on the encoder-only models (pytorch_version/encoder_only.py): a BERT classifier,
a BERT masked LM and a ViT. Their cache has `encoder.{i}.*` and no decoder: one stack over the source
(ids, or an image's [CLS] + patches), no look-ahead mask.

- the family: from the model's arch and from the cache's names;
- the --debug trace: its sections, and numbers that are the cache's (the printed attention matrix, whose
  rows sum to 1; the class probabilities; the guess at each [MASK]; a ViT's [CLS] grid);
- write_analysis: the report's encoder_only section, the heatmaps per head, the encoder figures (a ViT's
  [CLS] attention drawn over the image, its patch filters; BERT's special tokens), the recorder;
- the gradient flow of a classifier (class 0 counts) and of a masked LM (unmasked positions do not).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.factory import tiny_bert, tiny_gpt, tiny_pytorch, tiny_vit
from tests.observe import test_figures_data as figures_data
from tests.observe.test_figures_data import panels
from utils.data.digits import PatchTokenizer
from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer
from utils.observe.analysis import TransformerAnalyzer
from utils.observe.family import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY, family_of
from utils.observe.monitor import InternalsRecorder, write_analysis
from utils.observe.trace_printer import trace_example

pytestmark = pytest.mark.usefixtures("single_thread")
drawn = figures_data.drawn  # {file stem: Figure}, savefig replaced by a recorder

TOK = CharTokenizer("abcdefgh", specials=ENCODER_SPECIALS)  # [CLS] 4, [SEP] 5, [MASK] 6, a.. 7..
V = TOK.vocab_size
CLS, SEP, MASK = TOK.cls_id, TOK.sep_id, TOK.mask_id
TEXT = torch.tensor([[CLS, 7, 8, 8, 7, SEP, 0], [CLS, 9, 10, 9, SEP, 0, 0]])  # a b b a | c d c, padded
MASKED = torch.tensor([[CLS, 7, MASK, 9, MASK, 11, SEP], [CLS, 12, 13, MASK, 7, SEP, 0]])
MLM_LABELS = torch.tensor([[0, 0, 8, 0, 10, 0, 0], [0, 0, 0, 14, 0, 0, 0]])  # only the masked positions
NONE = torch.zeros(2, 0, dtype=torch.long)  # an encoder-only model has no target side
IMAGES = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
PATCHES = PatchTokenizer(8, 2, 1)


def uneven(model):
    """The model with noise on its weights, so that heads attend unevenly (N(0, 0.02) alone is uniform)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def classifier(pooling: str = "cls"):
    return uneven(tiny_bert(src_vocab_size=V, tgt_vocab_size=V, labels=("no", "yes"), pooling=pooling,
                            cls_id=CLS, mask_id=MASK))  # fmt: skip


def masked_lm():
    return uneven(tiny_bert(src_vocab_size=V, tgt_vocab_size=V, cls_id=CLS, mask_id=MASK))


def vit():
    return uneven(tiny_vit())


def printed_matrix(text: str, layer: int, tokens: list[str]) -> np.ndarray:
    """Head 0's attention matrix as the trace printed it in `layer`: keys across, queries down."""
    block = text[text.index(f"Encoder layer {layer}") :]
    lines = block[block.index("strongest key per query") :].splitlines()[1 : 2 + len(tokens)]
    assert lines[0].split() == tokens
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == tokens
    return np.array([[float(x) for x in r[1:]] for r in rows])


# ---- the family ---------------------------------------------------------------------------------------
def test_the_family_is_read_from_the_model_and_from_the_cache():
    for model, src in ((classifier(), TEXT), (masked_lm(), MASKED), (vit(), IMAGES)):
        _, cache = model.run_with_cache(src, NONE)
        assert family_of(model=model) is ENCODER_ONLY and family_of(cache) is ENCODER_ONLY
        assert family_of(name="encoder-only") is ENCODER_ONLY
    _, gpt_cache = tiny_gpt().run_with_cache(TEXT[:, :3], TEXT[:, 3:])
    _, paper_cache = tiny_pytorch().run_with_cache(TEXT, TEXT)
    assert family_of(gpt_cache) is DECODER_ONLY and family_of(paper_cache) is ENCODER_DECODER
    assert ENCODER_ONLY.stacks == ("encoder",) and ENCODER_ONLY.tracked_kind == "encoder_self"
    src_ok = torch.tensor([[True, True, False]])
    _, allowed, _ = ENCODER_ONLY.attention_masks("encoder", "self_attn", src_ok, src_ok)
    assert allowed[0].tolist() == [[True, True, False]] * 3  # padding only: no look-ahead


# ---- the --debug trace --------------------------------------------------------------------------------
def test_trace_of_a_bert_classifier():
    model = classifier()
    text = trace_example(model, TEXT, NONE, TOK.tokens, layers="all", heads="0")
    tokens = ["[CLS]", "a", "b", "b", "a", "[SEP]"]  # row 0, its padding cut off
    assert "ENCODER-ONLY MODEL" in text and "no look-ahead mask" in text
    assert f"ENCODER   6 source tokens: {' '.join(tokens)}" in text
    assert "Decoder" not in text and "DECODER" not in text and "Cross-attention" not in text
    assert "LayerNorm of the embeddings" in text and text.count("> Add & Norm") == 4  # post-LN: 2 per layer
    assert "Final LayerNorm" not in text and "FFN(x) = GELU(x W1 + b1) W2 + b2" in text
    steps = ("1. Linear projections", "2. Reshape for heads", "3. Scores", "5. Softmax", "6. Weighted sum",
             "7. Concatenate heads", "4. Mask: padding only (no look-ahead)")  # fmt: skip
    for step in steps:
        assert text.count(step) == 2, step
    assert (
        len(re.findall(r"blocked per head\s+0 of 36", text)) == 2
    )  # nothing blocked: no pads, no look-ahead
    logits, cache = model.run_with_cache(TEXT[:1, :6], NONE[:1])
    for layer in range(2):
        printed = printed_matrix(text, layer, tokens)
        expected = cache[f"encoder.{layer}.self_attn.weights"][0, 0].numpy()
        np.testing.assert_allclose(printed, expected, atol=0.005 + 1e-6)
        np.testing.assert_allclose(printed.sum(-1), 1.0, atol=0.03)  # softmax rows, rounded to 0.01
        assert printed.std() > 0.05 and np.triu(printed, 1).max() > 0.05  # uneven, and keys ahead are seen
    probs = logits[0].detach().softmax(-1)
    shown = re.search(r"class probabilities \(softmax\): no ([\d.]+), yes ([\d.]+)", text)
    np.testing.assert_allclose([float(shown[1]), float(shown[2])], probs, atol=5e-4)
    assert f"predicted class: {['no', 'yes'][int(probs.argmax())]}" in text
    assert "through the pooler, tanh" in text and "pooled vector" in text


def test_trace_says_how_a_mean_pooling_classifier_pools():
    text = trace_example(classifier("mean"), TEXT, NONE, TOK.tokens)
    assert "classifier: one vector per sequence (the mean of every token's output)" in text


def test_trace_of_a_bert_masked_lm_gives_the_guess_at_each_mask():
    model = masked_lm()
    text = trace_example(model, MASKED, NONE, TOK.tokens, layers="1", heads="0,2")
    assert "Encoder layer 1" in text and "Encoder layer 0" not in text
    assert "masked-LM head" in text and "class probabilities" not in text
    logits, _ = model.run_with_cache(MASKED[:1], NONE[:1])
    probs = logits[0].detach().softmax(-1)
    guesses = re.findall(r"position +(\d+) \[MASK\] -> (\S+) \(p = ([\d.]+)\)", text)
    assert [int(g[0]) for g in guesses] == [2, 4]  # the [MASK]s of row 0
    for position, token, p in guesses:
        i = int(position)
        assert token == TOK.id_to_token[int(probs[i].argmax())]
        assert abs(float(p) - float(probs[i].max())) < 5e-4


def test_trace_of_a_vit_shows_the_patches_and_the_cls_grid():
    model = vit()
    text = trace_example(model, IMAGES, NONE, PATCHES.tokens, layers="all", heads="1")
    assert "ENCODER   17 source tokens: [CLS] r0c0 r0c1" in text
    assert "image (C, H, W) = (1, 8, 8)" in text and "cut into 16 patches of 2 x 2 (4 x 4)" in text
    assert "Patch embedding" in text and "[CLS] vector" in text and "token embedding" not in text
    assert text.count("> LayerNorm before the self-attention (pre-LN") == 2 and "Final LayerNorm" in text
    logits, cache = model.run_with_cache(IMAGES[:1], NONE[:1])
    for layer in range(2):
        block = text[text.index(f"Encoder layer {layer}") :]
        head = re.search(r"head 1 \[CLS\] -> itself ([\d.]+), -> the patches as the image's grid:\n", block)
        grid = np.array([[float(x) for x in line.split()] for line in block[head.end() :].splitlines()[:4]])
        row = cache[f"encoder.{layer}.self_attn.weights"][0, 1, 0]
        np.testing.assert_allclose(grid, row[1:].reshape(4, 4), atol=0.005 + 1e-6)
        assert abs(float(head[1]) - float(row[0])) < 0.005 + 1e-6
        assert abs(grid.sum() + float(head[1]) - 1) < 0.05  # [CLS]'s row of the softmax
    probs = re.search(r"class probabilities \(softmax\): (.*)", text)[1].split(", ")
    assert [p.split()[0] for p in probs] == list("0123456789")
    np.testing.assert_allclose(
        [float(p.split()[1]) for p in probs], logits[0].detach().softmax(-1), atol=5e-4
    )


# ---- the analysis and the figures -------------------------------------------------------------------
CASES = {
    "classifier": (classifier, TEXT, torch.tensor([0, 1])),
    "masked_lm": (masked_lm, MASKED, MLM_LABELS),
    "vit": (vit, IMAGES, torch.tensor([3, 0])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_write_analysis_writes_the_report_and_the_figures(case, drawn, tmp_path):
    build, src, labels = CASES[case]
    model = build()
    image = src.dim() > 2
    src_tokens = PATCHES.tokens() if image else TOK.tokens(src[0][src[0] != 0])
    vocab = PATCHES.id_to_token if image else TOK.id_to_token
    recorder = InternalsRecorder(src[:1], NONE[:1], every=1)
    for step in (1, 2):
        recorder.record(model, step)
    write_analysis(model, src, NONE, labels, src_tokens, [], vocab, tmp_path, recorder)
    report = json.loads((tmp_path / "analysis_report.json").read_text())
    assert report["family"] == "encoder-only" and set(report["qkv_statistics"]) == {
        "encoder.0.self_attn", "encoder.1.self_attn"}  # fmt: skip
    section = report["encoder_only"]
    assert section["head"] == ("masked_lm" if case == "masked_lm" else "classifier")
    assert len(section["cls_attention"]["encoder.1.self_attn"]) == 4  # a row per head
    assert report["gradient_flow"]["loss"] > 0 and "encoder.0.self_attn" in report["gradient_flow"]["groups"]
    assert json.loads((tmp_path / "internals.json").read_text())["family"] == "encoder-only"
    for stem in ("multihead_comparison_encoder_self_layer0", "multihead_comparison_encoder_self_layer1",
                 "encoder_self_layer1", "attention_step_2", "qkv_evolution", "gradient_flow"):  # fmt: skip
        assert stem in drawn, stem
    assert len(panels(drawn["multihead_comparison_encoder_self_layer1"])) == 4  # every head
    encoder_dir = tmp_path / "visualizations" / "encoder"
    if image:
        assert (
            section["patch_embedding"]["filters"] == 32
            and "patch_embed.projection.weight" in report["embeddings"]
        )
        assert (encoder_dir / "vit_cls_attention.png").exists() and (
            encoder_dir / "patch_filters.png"
        ).exists()
        _, cache = model.run_with_cache(src, NONE)
        rows = drawn["vit_cls_attention"].axes
        overlay = rows[5 + 1 + 2].images[1].get_array()  # layer 1, head 2: the weights over the image
        expected = cache["encoder.1.self_attn.weights"][0, 2, 0, 1:].reshape(4, 4)
        np.testing.assert_allclose(np.asarray(overlay), expected, rtol=1e-6)
        filters = drawn["patch_filters"].axes[5].images[0].get_array()
        np.testing.assert_allclose(np.asarray(filters), model.patch_embed.projection.weight[5, 0].detach())
    else:
        specials = section["special_tokens"]
        assert {"[CLS]", "[SEP]", "[MASK]", "<pad>"} <= set(specials) and specials["ordinary"]["count"] == 8
        assert specials["[CLS]"]["id"] == CLS and (encoder_dir / "special_tokens.png").exists()
        weight = model.src_embed.embedding.weight
        assert abs(specials["[MASK]"]["norm"] - float(weight[MASK].detach().norm())) < 1e-5
    assert "encoder/" in (tmp_path / "report.md").read_text()  # report.md lists the encoder figures


def test_gradient_flow_of_the_heads():
    model = classifier()
    flow = TransformerAnalyzer(model).analyze_gradient_flow(TEXT, NONE, labels=torch.tensor([0, 0]))
    expected = F.cross_entropy(model(TEXT).detach(), torch.tensor([0, 0]))  # class 0 counts (PAD's id too)
    assert abs(flow["loss"] - float(expected)) < 1e-5
    lm = masked_lm()
    flow = TransformerAnalyzer(lm).analyze_gradient_flow(MASKED, NONE, labels=MLM_LABELS)
    logits, picked = lm(MASKED).detach(), MLM_LABELS != 0
    assert abs(flow["loss"] - float(F.cross_entropy(logits[picked], MLM_LABELS[picked]))) < 1e-5
    with pytest.raises(ValueError, match="needs its labels"):
        TransformerAnalyzer(lm).analyze_gradient_flow(MASKED, NONE)
