"""The user guide's analysis API, its lines verbatim, on a model of either version: a pytorch_version
Transformer and a Hugging Face model loaded from a save_pretrained folder."""

from __future__ import annotations

import json

import pytest
import torch

from tests.factory import tiny_config
from utils.data.tasks import collate, tokenizer_for_task

PNG = b"\x89PNG\r\n\x1a\n"


def pytorch_model():
    from pytorch_version.model import Transformer

    tokenizer = tokenizer_for_task("reversal")
    torch.manual_seed(0)
    cfg = tiny_config(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size)
    return Transformer(cfg).eval()


def hugging_face_model(folder):
    from huggingface_version.convert import pytorch_to_hf
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration

    pytorch_to_hf(pytorch_model()).save_pretrained(folder)
    return TutorialTransformerForConditionalGeneration.from_pretrained(folder).eval()


@pytest.fixture(params=["pytorch", "huggingface"])
def model(request, tmp_path):
    return (
        pytorch_model()
        if request.param == "pytorch"
        else hugging_face_model(tmp_path / "results_huggingface")
    )


@pytest.fixture
def batch():
    tokenizer = tokenizer_for_task("reversal")
    pairs = [("hello", "olleh"), ("abc", "cba")]
    rows = collate([(tokenizer.encode(s), tokenizer.encode(t)) for s, t in pairs])
    src_tokens = tokenizer.tokens(tokenizer.encode("hello"))
    tgt_tokens = tokenizer.tokens([tokenizer.bos_id, *tokenizer.encode("olleh")])
    return rows, src_tokens, tgt_tokens


def test_the_guides_analyzer_lines_run_verbatim(model, batch, tmp_path, monkeypatch):
    rows, src_tokens, tgt_tokens = batch
    input_ids, target_ids = rows["src"], rows["tgt_in"]
    attention_mask = (input_ids != 0).long()
    tokens = {"src": src_tokens, "tgt": tgt_tokens}
    monkeypatch.chdir(tmp_path)

    from utils.analysis import TransformerAnalyzer

    analyzer = TransformerAnalyzer(model)
    analyzer.comprehensive_analysis(input_ids, target_ids, attention_mask, tokens, save_path="detailed_analysis.json")  # noqa: E501  # fmt: skip
    analyzer.analyze_qkv_statistics(input_ids)
    analyzer.analyze_attention_patterns(input_ids, tokens=tokens)
    analyzer.analyze_gradient_flow(input_ids, target_ids)

    report = json.loads((tmp_path / "detailed_analysis.json").read_text(encoding="utf-8"))
    assert {"qkv_statistics", "attention_patterns", "gradient_flow", "embeddings"} <= set(report)
    assert report["tokens"] == tokens
    qkv = analyzer.analyze_qkv_statistics(input_ids)
    decoder = {f"decoder.{i}.{m}" for i in (0, 1) for m in ("self_attn", "cross_attn")}
    layers = {f"encoder.{i}.self_attn" for i in (0, 1)} | decoder
    assert set(qkv) == layers
    assert qkv["encoder.0.self_attn"][0]["q_std"] > 0
    patterns = analyzer.analyze_attention_patterns(input_ids, tokens=tokens)
    links = patterns["decoder.0.cross_attn"][0]["strongest_links"]
    assert links[0].startswith("<s> -> ") and links[0].split(" -> ")[1] in src_tokens
    assert len(patterns["encoder.0.self_attn"][1]["strongest_links"]) == len(src_tokens)
    flow = analyzer.analyze_gradient_flow(input_ids, target_ids)
    assert flow["total_norm"] > 0 and flow["loss"] > 0


def test_the_guide_form_equals_the_cache_form(batch):
    """`analyze_qkv_statistics(input_ids, target_ids)` runs the model; it reads what the cache does."""
    from utils.observe.analysis import TransformerAnalyzer

    rows, _, _ = batch
    analyzer = TransformerAnalyzer(pytorch_model())
    _, cache = analyzer.run(rows["src"], rows["tgt_in"])
    assert analyzer.analyze_qkv_statistics(rows["src"], rows["tgt_in"]) == analyzer.analyze_qkv_statistics(
        cache, rows["src"], rows["tgt_in"]
    )
    alone = analyzer.analyze_attention_patterns(rows["src"])  # the decoder reads BOS alone
    assert len(alone["decoder.0.cross_attn"]) == analyzer.model.config.num_heads


def test_the_guides_heatmap_line_one_head_all_heads_and_both_sides(batch, tmp_path, monkeypatch):
    rows, src_tokens, tgt_tokens = batch
    monkeypatch.chdir(tmp_path)
    from utils.observe.analysis import TransformerAnalyzer
    from utils.visualization import TransformerVisualizer

    _, cache = TransformerAnalyzer(pytorch_model()).run(rows["src"], rows["tgt_in"])
    cross = cache["decoder.0.cross_attn.weights"]  # (B, H, T, S)
    for attention_weights, tokens in (
        (cache["encoder.0.self_attn.weights"][0, 0], src_tokens),  # one head, one list for both axes
        (cache["encoder.0.self_attn.weights"][0], src_tokens),  # all heads
        (cross[0, 1], (tgt_tokens, src_tokens)),  # target rows, source columns
        (cross, (tgt_tokens, src_tokens)),  # a batch: example 0
    ):
        path = TransformerVisualizer("my_viz").plot_attention_heatmap(attention_weights, tokens)
        assert path.read_bytes()[:8] == PNG
    assert (
        tmp_path / path
    ).resolve() == tmp_path / "my_viz" / "visualizations" / "attention" / "attention.png"
    with pytest.raises(ValueError, match=r"\(T, S\), \(H, T, S\) or \(B, H, T, S\)"):
        TransformerVisualizer("my_viz").plot_attention_heatmap(torch.ones(5), src_tokens)
