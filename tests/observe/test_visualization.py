"""TransformerVisualizer: every figure is a real PNG, report.md lists them, the paper formulas agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pytorch_version.layers import PositionalEncoding
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.figures import paper as pf
from utils.figures.training_curves import plot_training_curves
from utils.figures.visualization import TransformerVisualizer
from utils.observe.analysis import TransformerAnalyzer
from utils.observe.attention_maps import attention_weights
from utils.training.recipe import noam_schedule

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOCAB = ["<pad>", "<s>", "</s>", "<unk>"] + [chr(ord("a") + i) for i in range(26)]


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny model, one padded batch, its cache and analysis report, and the whole catalogue."""
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    src = torch.tensor([[8, 9, 10, 11, 2, 0, 0], [5, 6, 7, 8, 9, 10, 2]])
    tgt = torch.tensor([[1, 11, 10, 9, 8, 0, 0], [1, 10, 9, 8, 7, 6, 5]])
    analyzer = TransformerAnalyzer(model)
    _, cache = analyzer.run(src, tgt)
    report = analyzer.comprehensive_analysis(src, tgt, cache=cache)
    src_tokens = [VOCAB[i] for i in src[0, :5]]  # example 0 without its padding
    tgt_tokens = [VOCAB[i] for i in tgt[0, :5]]
    out = tmp_path_factory.mktemp("run")
    vis = TransformerVisualizer(out)
    paths = vis.plot_all(report, cache, src_tokens, tgt_tokens, analyzer.embedding_weights(), VOCAB)
    return dict(vis=vis, out=out, cache=cache, report=report, paths=paths, src=src_tokens, tgt=tgt_tokens)


def test_plot_all_writes_the_design_catalogue(run):
    root = run["out"] / "visualizations"
    pngs = [p for p in run["paths"] if p.suffix == ".png"]
    for path in pngs:
        assert_png(path)
    names = {p.relative_to(root).as_posix() for p in pngs}
    expected = {
        "attention/attention_step_0.png",
        "attention/attention_evolution.png",
        "attention/multihead_comparison.png",
        "qkv/qkv_evolution.png",
        "qkv/layer_contributions.png",
        "qkv/gradient_flow.png",
        "paper/positional_encoding.png",
        "paper/masks.png",
        "paper/noam_schedule.png",
        "paper/label_smoothing.png",
        "paper/embedding_analysis_tgt_embed_embedding_weight.png",
    }
    expected |= {
        f"attention/{k}_layer{i}.png"
        for k in ("encoder_self", "decoder_self", "decoder_cross")
        for i in range(2)
    }
    assert expected <= names
    assert names == {p.relative_to(root).as_posix() for p in root.rglob("*.png")}


def test_report_md_lists_every_figure_with_a_reading_hint(run):
    report_md = run["out"] / "visualizations" / "report.md"
    assert report_md in run["paths"]
    text = report_md.read_text()
    for png in (run["out"] / "visualizations").rglob("*.png"):
        rel = png.relative_to(run["out"] / "visualizations").as_posix()
        assert f"## {rel}" in text and f"]({rel})" in text
    assert "A figure of this run." not in text  # every catalogue figure has its own sentence
    assert "look-ahead" in text and "anti-diagonal" in text


def test_training_time_figures_with_several_steps(run, tmp_path):
    vis = TransformerVisualizer(tmp_path)
    cache, report = run["cache"], run["report"]
    w = attention_weights(cache, "decoder_cross", layer=-1, head=1)
    assert w.shape == (7, 7) and np.allclose(w.sum(-1), 1.0, atol=1e-5)
    snapshots = [(step, np.roll(w, step, axis=1)) for step in (0, 50, 100, 150)]
    paths = [
        vis.plot_attention_step(w, run["tgt"], 150, run["src"]),
        vis.plot_attention_evolution(snapshots, run["tgt"], run["src"]),
        vis.plot_qkv_evolution([(s, report["qkv_statistics"]) for s in (0, 50, 100)]),
        vis.plot_attention_for_example(cache, run["src"], run["tgt"], layer=1, kind="cross", head=2),
        vis.plot_attention_heatmap(w[:3, :4], list("abc"), list("wxyz"), "part", tmp_path / "part.png"),
        vis.plot_layer_contributions(report["layer_contributions"]),  # a section works too
        plot_training_curves(
            [{"epoch": e, "train_loss": 1 / e, "eval_exact_match": e / 3} for e in (1, 2, 3)],
            tmp_path / "training_curves.png",
        ),
    ]
    assert paths[0].name == "attention_step_150.png"
    assert paths[3].name == "decoder_cross_layer1_head2.png"
    for path in paths:
        assert_png(path)
    assert "training_curves.png" in vis.write_report_md(tmp_path).read_text()
    with pytest.raises(ValueError, match="attention kind"):
        attention_weights(cache, "sideways")


def test_paper_formulas_match_the_implementation():
    table = PositionalEncoding(16, 50).table.numpy()
    assert np.allclose(pf.sinusoidal_encoding(50, 16), table, atol=1e-5)
    rate = noam_schedule(64, 400)
    steps = np.array([1, 10, 400, 401, 5000])
    assert np.allclose(pf.noam_rate(steps, 64, 400), [rate(int(s)) for s in steps])
    # the smoothed target is what F.cross_entropy(label_smoothing=eps) trains towards
    logits = torch.randn(1, 9)
    target = torch.from_numpy(pf.smoothed_target(9, 4, 0.2)).float()[None]
    expected = F.cross_entropy(logits, torch.tensor([4]), label_smoothing=0.2)
    assert torch.allclose(-(target * logits.log_softmax(-1)).sum(), expected, atol=1e-6)
