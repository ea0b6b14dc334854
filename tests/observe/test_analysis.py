"""TransformerAnalyzer: cache-driven statistics, pattern classes, gradient flow, the JSON report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.observe.analysis import TransformerAnalyzer, parameter_group
from utils.observe.attention_patterns import PATTERNS, classify_pattern, pattern_features

SUBLAYERS = [f"encoder.{i}.self_attn" for i in range(2)] + [
    f"decoder.{i}.{m}" for i in range(2) for m in ("self_attn", "cross_attn")
]


@pytest.fixture
def analyzer(tiny_model) -> TransformerAnalyzer:
    return TransformerAnalyzer(tiny_model)


def test_cache_analyses_cover_every_layer_sublayer_and_head(analyzer, batch):
    src, tgt = batch
    _, cache = analyzer.run(src, tgt)
    qkv = analyzer.analyze_qkv_statistics(cache, src, tgt)
    patterns = analyzer.analyze_attention_patterns(cache, src, tgt)
    assert sorted(qkv) == sorted(patterns) == sorted(SUBLAYERS)
    for name in SUBLAYERS:
        assert [h["head"] for h in qkv[name]] == [h["head"] for h in patterns[name]] == [0, 1, 2, 3]
        for stats in qkv[name]:
            assert all(math.isfinite(stats[f"{x}_{s}"]) for x in "qkv" for s in ("mean", "std", "norm"))
            # the scaled scores are the raw q.k divided by sqrt(d_k) = sqrt(8)
            assert stats["score_std_scaled"] == pytest.approx(stats["score_std_raw"] / math.sqrt(8))
        for head in patterns[name]:
            assert head["pattern"] in PATTERNS
            assert 0.0 <= head["normalized_entropy"] <= 1.0 + 1e-5
            assert head["span"] >= 0.0 and math.isfinite(head["entropy"])


def test_padding_is_left_out_of_attention_statistics(analyzer):
    """Weights uniform over the real keys look uniform once PAD rows and columns are masked."""
    src = torch.tensor([[5, 6, 7, 0, 0]])
    w = torch.zeros(1, 2, 5, 5)
    w[..., :3] = 1 / 3  # uniform over the 3 real keys
    w[..., 3:, :] = torch.eye(5)[3:]  # rows of PAD queries: anything, must be ignored
    heads = analyzer.analyze_attention_patterns({"encoder.0.self_attn.weights": w}, src)[
        "encoder.0.self_attn"
    ]
    assert heads[0]["normalized_entropy"] == pytest.approx(1.0, abs=1e-5)
    assert heads[0]["pattern"] == "global/uniform"


def _previous_token(n: int) -> torch.Tensor:
    w = torch.zeros(n, n)
    w[0, 0] = 1.0
    w[torch.arange(1, n), torch.arange(n - 1)] = 1.0
    return w


def test_classify_pattern_on_constructed_matrices():
    n = 7
    assert classify_pattern(torch.eye(n)) == "diagonal/local"
    assert classify_pattern(torch.full((n, n), 1 / n)) == "global/uniform"
    assert classify_pattern(_previous_token(n)) == "previous-token"
    assert classify_pattern(torch.eye(n).flip(1)) == "reversed/anti-diagonal"
    first = torch.zeros(n, n)
    first[:, 0] = 1.0
    assert classify_pattern(first) == "first-token/focused"
    causal_uniform = torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None]
    assert classify_pattern(causal_uniform, causal=True) == "global/uniform"
    # the mirror is taken among real keys: an anti-diagonal over 5 of 7 keys is still "reversed"
    padded = torch.zeros(5, n)
    padded[:, :5] = torch.eye(5).flip(1)
    assert classify_pattern(padded, key_mask=torch.arange(n) < 5) == "reversed/anti-diagonal"
    assert pattern_features(torch.eye(n))["span"] == pytest.approx(0.0)


def test_parameter_groups_for_both_naming_styles():
    cases = {
        "encoder.layers.0.self_attn.q_proj.weight": "encoder.0.self_attn",
        "encoder.layers.1.ffn.fc1.weight": "encoder.1.ffn",
        "decoder.layers.1.cross_attn.out_proj.bias": "decoder.1.cross_attn",
        "decoder.layers.0.norm3.weight": "decoder.0.norm",
        "src_embed.embedding.weight": "embeddings",
        "lm_head.weight": "lm_head",
        # Hugging Face (BART/Marian) style
        "model.decoder.layers.1.encoder_attn.k_proj.weight": "decoder.1.cross_attn",
        "model.encoder.layers.0.fc2.bias": "encoder.0.ffn",
        "model.encoder.layers.0.self_attn_layer_norm.weight": "encoder.0.norm",
        "model.decoder.layers.0.encoder_attn_layer_norm.bias": "decoder.0.norm",
        "model.shared.weight": "embeddings",
        "model.encoder.layer_norm.weight": "final_norm",
    }
    assert {name: parameter_group(name) for name in cases} == cases


def test_gradient_flow_reaches_every_group_and_leaves_grads_alone(analyzer, batch):
    model = analyzer.model.train()
    flow = analyzer.analyze_gradient_flow(*batch)
    expected = {"embeddings"} | {f"encoder.{i}.{s}" for i in range(2) for s in ("self_attn", "ffn", "norm")}
    expected |= {f"decoder.{i}.{s}" for i in range(2) for s in ("self_attn", "cross_attn", "ffn", "norm")}
    assert expected <= set(flow["groups"])
    assert all(flow["groups"][g] > 0 for g in expected)
    assert flow["loss"] > 0 and flow["total_norm"] > 0
    assert all(p.grad is None for p in model.parameters())  # nothing was left behind
    assert model.training  # the mode is restored


def test_layer_contributions_and_embeddings(analyzer, batch):
    _, cache = analyzer.run(*batch)
    contrib = analyzer.analyze_layer_contributions(cache, *batch)
    assert len(contrib["sublayers"]) == 2 * 2 + 2 * 3  # encoder: attn, ffn; decoder: self, cross, ffn
    assert all(e["relative_update"] > 0 for e in contrib["sublayers"])
    assert [e["layer"] for e in contrib["ffn"]] == ["encoder.0", "encoder.1", "decoder.0", "decoder.1"]
    assert all(0.0 < e["dead_fraction"] < 1.0 for e in contrib["ffn"])  # ReLU: some off, some on
    emb = analyzer.analyze_embeddings()
    assert set(emb) == {"src_embed.embedding.weight", "tgt_embed.embedding.weight"}  # lm_head is tied
    assert all(-1.0 <= e["mean_cosine_similarity"] <= 1.0 for e in emb.values())
    shared = TransformerAnalyzer(Transformer(tiny_config(share_embeddings=True)))
    assert len(shared.embedding_weights()) == 1  # one matrix shared three ways counts once


def test_comprehensive_analysis_writes_a_json_report(analyzer, batch, tmp_path):
    src, tgt = batch
    tokens = {"src": ["a", "b"], "tgt": ["<s>", "b"]}
    report = analyzer.comprehensive_analysis(src, tgt, tokens=tokens, save_path=tmp_path)
    path = tmp_path / "analysis_report.json"
    assert path.is_file()
    loaded = json.loads(path.read_text())
    assert loaded == report
    assert {
        "qkv_statistics",
        "attention_patterns",
        "layer_contributions",
        "embeddings",
        "gradient_flow",
        "thresholds",
        "config",
        "tokens",
    } <= set(loaded)
    assert loaded["config"]["num_heads"] == 4 and loaded["tokens"] == tokens


def test_the_hugging_face_model_feeds_the_same_analysis(batch):
    """Only the cache contract, the config and parameter names are used, so HF naming works too."""
    hf = pytest.importorskip("huggingface_version.modeling")

    torch.manual_seed(0)
    from huggingface_version.convert import hf_config_of

    config = hf_config_of(tiny_config())
    model = hf.TutorialTransformerForConditionalGeneration(config)
    report = TransformerAnalyzer(model.eval()).comprehensive_analysis(*batch)
    assert sorted(report["attention_patterns"]) == sorted(SUBLAYERS)
    groups = report["gradient_flow"]["groups"]
    assert {f"decoder.{i}.{s}" for i in range(2) for s in ("cross_attn", "ffn", "norm")} <= set(groups)
    assert all(norm > 0 for norm in groups.values())
