"""What the figures show: the data drawn, read back from the matplotlib objects before saving.

tests/observe/test_visualization.py checks that every figure is a PNG; a figure of the wrong head, the
wrong example, untrimmed padding or another run's losses passes that. Here `Figure.savefig` is
replaced by a recorder (nothing is rendered, so the tests are fast) and each figure's artists
are compared with the numbers they should show: the heatmap's QuadMesh array with the cache's
attention weights for that layer and head, trimmed to the tokens; the tick labels with the
tokens; the lines with the history's losses and the paper's formulas; the bars with the report.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch

from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.figures import paper as pf
from utils.figures.training_curves import plot_training_curves
from utils.figures.visualization import TransformerVisualizer
from utils.observe.analysis import TransformerAnalyzer
from utils.observe.tracing import run_with_cache
from utils.training.recipe import noam_schedule

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: every figure drawn, write_analysis after runs

VOCAB = ["<pad>", "<s>", "</s>", "<unk>"] + [chr(ord("a") + i) for i in range(26)]
SRC = torch.tensor([[8, 9, 10, 11, 2, 0, 0], [5, 6, 7, 8, 9, 10, 2]])  # example 0 has 2 PADs
TGT = torch.tensor([[1, 11, 10, 9, 8, 0, 0], [1, 10, 9, 8, 7, 6, 5]])
SRC_TOKENS = [VOCAB[i] for i in SRC[0, :5]]  # example 0 without its padding
TGT_TOKENS = [VOCAB[i] for i in TGT[0, :5]]


@pytest.fixture
def drawn(monkeypatch):
    """{file stem: the Figure saved there}; savefig writes an empty placeholder instead of a PNG."""
    figures: dict[str, matplotlib.figure.Figure] = {}

    def record(self, path, *args, **kwargs):
        path = Path(path)
        figures[path.stem] = self
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


@pytest.fixture(scope="module", params=["pytorch", "huggingface"])
def analysed(request):
    """A tiny model of either version (the same weights), its cache of SRC/TGT and the analysis report."""
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    if request.param == "huggingface":
        from huggingface_version.convert import pytorch_to_hf

        model = pytorch_to_hf(model).eval()
    analyzer = TransformerAnalyzer(model)
    _, cache = analyzer.run(SRC, TGT)
    report = analyzer.comprehensive_analysis(SRC, TGT, cache=cache)
    return model, analyzer, cache, report


def panels(fig) -> list:
    """The figure's plotting axes, without colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def heatmap_of(ax) -> np.ndarray:
    """The matrix a seaborn heatmap drew on `ax` (its QuadMesh), rows top to bottom."""
    (mesh,) = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
    data = np.asarray(mesh.get_array(), dtype=float)
    return data if data.ndim == 2 else data.reshape(len(ax.get_yticks()), -1)


def labels(ax, axis: str) -> list[str]:
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def weights(cache, name: str, head=None, example: int = 0) -> np.ndarray:
    """(T, S) attention from the cache itself: one head, or the mean of the heads."""
    w = torch.as_tensor(cache[name][example]).float()  # (H, T, S)
    return (w.mean(0) if head is None else w[head]).numpy()


# ---- attention heatmaps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, name, rows, cols",
    [
        ("encoder_self", "encoder.{}.self_attn.weights", SRC_TOKENS, SRC_TOKENS),
        ("decoder_self", "decoder.{}.self_attn.weights", TGT_TOKENS, TGT_TOKENS),
        ("decoder_cross", "decoder.{}.cross_attn.weights", TGT_TOKENS, SRC_TOKENS),
    ],
)
@pytest.mark.parametrize("layer, head", [(0, None), (1, 2), (1, 0)])
def test_attention_heatmap_shows_that_heads_weights_trimmed_to_the_tokens(
    analysed, drawn, tmp_path, kind, name, rows, cols, layer, head
):
    _, _, cache, _ = analysed
    vis = TransformerVisualizer(tmp_path)
    vis.plot_attention_for_example(cache, SRC_TOKENS, TGT_TOKENS, layer, kind, head)
    fig = drawn[f"{kind}_layer{layer}" + ("" if head is None else f"_head{head}")]
    (ax,) = panels(fig)
    expected = weights(cache, name.format(layer), head)[: len(rows), : len(cols)]
    np.testing.assert_allclose(heatmap_of(ax), expected, rtol=1e-6, atol=1e-7)
    assert labels(ax, "y") == rows and labels(ax, "x") == cols  # queries down, keys across
    cells = [float(t.get_text()) for t in ax.texts]  # a 5 x 5 matrix: each cell has its value written
    np.testing.assert_allclose(cells, expected.ravel(), atol=0.005 + 1e-9)
    which = "mean of heads" if head is None else f"head {head}"
    assert f"layer {layer}" in ax.get_title() and which in ax.get_title()


def test_heads_drawn_are_different_matrices(analysed, drawn, tmp_path):
    """The premise that makes the test above discriminating: the heads of a layer differ."""
    _, _, cache, _ = analysed
    vis = TransformerVisualizer(tmp_path)
    for head in range(4):
        vis.plot_attention_for_example(cache, SRC_TOKENS, TGT_TOKENS, 1, "decoder_cross", head)
    drawn_heads = [heatmap_of(panels(drawn[f"decoder_cross_layer1_head{h}"])[0]) for h in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.allclose(drawn_heads[a], drawn_heads[b])


def test_multihead_comparison_shows_every_head_of_the_layer_on_one_scale(analysed, drawn, tmp_path):
    _, _, cache, _ = analysed
    vis = TransformerVisualizer(tmp_path)
    vis.plot_multihead_comparison(cache, -1, "decoder_cross", SRC_TOKENS, TGT_TOKENS)
    axes = panels(drawn["multihead_comparison"])
    assert len(axes) == 4
    all_heads = torch.as_tensor(cache["decoder.1.cross_attn.weights"][0]).float().numpy()
    for h, ax in enumerate(axes):
        np.testing.assert_allclose(heatmap_of(ax), weights(cache, "decoder.1.cross_attn.weights", h)[:5, :5])
        assert ax.get_title() == f"head {h}"
        assert labels(ax, "y") == TGT_TOKENS and labels(ax, "x") == SRC_TOKENS
        (mesh,) = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
        assert mesh.get_clim() == pytest.approx((0.0, float(all_heads.max())))  # one shared colour scale


def test_attention_step_and_evolution_show_the_snapshots_given(drawn, tmp_path):
    rng = np.random.default_rng(0)
    snapshots = [(step, rng.random((7, 7))) for step in range(0, 200, 10)]  # 20 snapshots, padded 7 x 7
    vis = TransformerVisualizer(tmp_path)
    vis.plot_attention_step(snapshots[3][1], TGT_TOKENS, 30, SRC_TOKENS)
    (ax,) = panels(drawn["attention_step_30"])
    np.testing.assert_allclose(heatmap_of(ax), snapshots[3][1][:5, :5])
    assert "30" in ax.get_title() and labels(ax, "x") == SRC_TOKENS

    vis.plot_attention_evolution(snapshots, TGT_TOKENS, SRC_TOKENS, max_panels=8)
    axes = panels(drawn["attention_evolution"])
    assert len(axes) == 8
    shown = [int(ax.get_title().removeprefix("step ")) for ax in axes]
    assert shown[0] == 0 and shown[-1] == 190 and shown == sorted(shown)  # first to last, in order
    by_step = dict(snapshots)
    for step, ax in zip(shown, axes):
        np.testing.assert_allclose(heatmap_of(ax), by_step[step][:5, :5])


def test_write_analysis_draws_the_models_own_attention_and_embeddings(analysed, drawn, tmp_path):
    """The training runs' entry point (both versions call it; it draws the whole catalogue with
    TransformerVisualizer.plot_all): the figures show the model's attention for row 0 of the probe
    batch cut to its tokens, the tracked head (head 0 of the last cross-attention), and the
    model's own embedding matrices."""
    from utils.observe.monitor import write_analysis

    model, _, _, _ = analysed
    tgt_out = torch.cat([TGT[:, 1:], torch.full((2, 1), 2)], dim=1)
    write_analysis(model, SRC, TGT, tgt_out, SRC_TOKENS, TGT_TOKENS, VOCAB, tmp_path)
    with torch.no_grad():
        _, cache = run_with_cache(model, SRC, TGT)
    figures = [
        ("decoder_cross_layer1", "decoder.1.cross_attn.weights", None, TGT_TOKENS),
        ("encoder_self_layer0", "encoder.0.self_attn.weights", None, SRC_TOKENS),
        ("attention_step_0", "decoder.1.cross_attn.weights", 0, TGT_TOKENS),  # the tracked head
        ("attention_evolution", "decoder.1.cross_attn.weights", 0, TGT_TOKENS),
    ]
    for stem, name, head, rows in figures:
        ax = panels(drawn[stem])[0]
        expected = weights(cache, name, head)[:5, :5]
        np.testing.assert_allclose(heatmap_of(ax), expected, rtol=1e-5, atol=1e-7, err_msg=stem)
        assert labels(ax, "y") == rows and labels(ax, "x") == SRC_TOKENS, stem
    for name, weight in TransformerAnalyzer(model).embedding_weights().items():  # one figure per matrix
        _, ax_cos = panels(drawn["embedding_analysis_" + re.sub(r"\W+", "_", name).strip("_")])
        unit = torch.nn.functional.normalize(torch.as_tensor(weight).float(), dim=1).numpy()
        np.testing.assert_allclose(heatmap_of(ax_cos), unit @ unit.T, atol=1e-5)
        assert labels(ax_cos, "x") == VOCAB


# ---- Q/K/V, layers, gradients ---------------------------------------------------------------------------
def test_qkv_evolution_plots_the_head_mean_of_each_statistic_per_sublayer(analysed, drawn, tmp_path):
    _, _, _, report = analysed
    stats = report["qkv_statistics"]
    later = {name: [{**h, "q_norm": h["q_norm"] * 2} for h in heads] for name, heads in stats.items()}
    TransformerVisualizer(tmp_path).plot_qkv_evolution([(0, stats), (50, later)])
    axes = panels(drawn["qkv_evolution"])
    for ax, metric in zip(axes, ("q_norm", "k_norm", "v_norm", "score_std_scaled")):
        assert metric.replace("_", " ") == ax.get_title()
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == set(stats)
        for name, line in lines.items():
            expected = [np.mean([h[metric] for h in s[name]]) for s in (stats, later)]
            assert list(line.get_xdata()) == [0, 50]
            np.testing.assert_allclose(line.get_ydata(), expected)


def test_layer_contributions_bars_are_the_reports_ratios(analysed, drawn, tmp_path):
    _, _, _, report = analysed
    section = report["layer_contributions"]
    TransformerVisualizer(tmp_path).plot_layer_contributions(report)
    ax_updates, ax_dead = panels(drawn["layer_contributions"])
    bars = {c.get_label(): [r.get_height() for r in c] for c in ax_updates.containers}
    for sub in ("self_attn", "cross_attn", "ffn"):
        expected = [e["relative_update"] for e in section["sublayers"] if e["sublayer"] == sub]
        np.testing.assert_allclose(bars[sub], expected)
    layers = list(dict.fromkeys(e["layer"] for e in section["sublayers"]))
    assert labels(ax_updates, "x") == layers
    (dead,) = ax_dead.containers
    np.testing.assert_allclose([r.get_height() for r in dead], [e["dead_fraction"] for e in section["ffn"]])


def test_gradient_flow_bars_are_the_gradient_norms_by_group(analysed, drawn, tmp_path):
    _, _, _, report = analysed
    groups = report["gradient_flow"]["groups"]
    TransformerVisualizer(tmp_path).plot_gradient_flow(report)
    (ax,) = panels(drawn["gradient_flow"])
    (bars,) = ax.containers
    np.testing.assert_allclose([r.get_width() for r in bars], list(groups.values()))
    assert labels(ax, "y") == list(groups)


# ---- training curves ------------------------------------------------------------------------------------
def test_training_curves_plot_the_histories_losses_and_scores(drawn, tmp_path):
    history = [
        {"epoch": e, "step": 10 * e, "train_loss": 3.0 / e, "eval_loss": 2.5 / e + 0.1,
         "eval_token_accuracy": 0.2 * e, "eval_exact_match": 0.1 * e, "eval_bleu": 7.0 * e,
         "eval_chrf": 11.0 * e, "lr": 1e-3, "elapsed_s": e}
        for e in (1, 2, 3, 4)
    ]  # fmt: skip
    history[2] = {k: v for k, v in history[2].items() if k != "eval_token_accuracy"}  # not in every record
    plot_training_curves(history, tmp_path / "training_curves.png", "run")
    ax_loss, ax_scores, ax_text = panels(drawn["training_curves"])
    epochs = [1, 2, 3, 4]

    def lines(ax):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}

    assert lines(ax_loss) == {key: (epochs, [r[key] for r in history]) for key in ("train_loss", "eval_loss")}
    assert lines(ax_scores) == {"eval_exact_match": (epochs, [r["eval_exact_match"] for r in history])}
    assert lines(ax_text) == {key: (epochs, [r[key] for r in history]) for key in ("eval_bleu", "eval_chrf")}
    assert drawn["training_curves"].get_suptitle() == "run"


def test_training_curves_without_text_scores_have_no_second_axis(drawn, tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "eval_exact_match": e / 2} for e in (1, 2)]
    plot_training_curves(history, tmp_path / "training_curves.png")
    ax_loss, ax_scores = panels(drawn["training_curves"])
    shown = [[(line.get_label(), list(line.get_ydata())) for line in ax.lines] for ax in (ax_loss, ax_scores)]
    assert shown == [[("train_loss", [1.0, 0.5])], [("eval_exact_match", [0.5, 1.0])]]


# ---- the paper's components -----------------------------------------------------------------------------
def test_positional_encoding_figure_shows_the_sinusoids_of_section_3_5(drawn, tmp_path):
    pf.plot_positional_encoding(tmp_path / "positional_encoding.png", d_model=16, max_len=40, dims=[0, 1, 8])
    ax_table, ax_waves = panels(drawn["positional_encoding"])
    pos, i = np.arange(40)[:, None], np.arange(16)[None, :]
    angle = pos / 10000 ** ((i - i % 2) / 16)  # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos
    table = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(heatmap_of(ax_table), table, atol=1e-12)
    assert [line.get_label() for line in ax_waves.lines] == ["dim 0 (sin)", "dim 1 (cos)", "dim 8 (sin)"]
    for line, d in zip(ax_waves.lines, (0, 1, 8)):
        np.testing.assert_allclose(line.get_ydata(), table[:, d], atol=1e-12)


def test_masks_figure_shows_padding_look_ahead_and_both(drawn, tmp_path):
    src, tgt = ["h", "i", "</s>", "<pad>"], ["<s>", "i", "h", "<pad>", "<pad>"]
    pf.plot_masks(tmp_path / "masks.png", src, tgt)
    padding, look_ahead, combined = (heatmap_of(ax) for ax in panels(drawn["masks"]))
    np.testing.assert_array_equal(padding, [[1, 1, 1, 0]] * 4)  # the <pad> key is hidden from every query
    np.testing.assert_array_equal(look_ahead, np.tril(np.ones((5, 5))))
    np.testing.assert_array_equal(combined, np.tril(np.ones((5, 5))) * [1, 1, 1, 0, 0])
    for ax, tokens in zip(panels(drawn["masks"]), (src, tgt, tgt)):
        assert labels(ax, "x") == tokens and labels(ax, "y") == tokens


def test_noam_figure_shows_the_training_schedule(drawn, tmp_path):
    pf.plot_noam_schedule(tmp_path / "noam_schedule.png", d_model=64, warmups=(100, 400), total_steps=1000)
    (ax,) = panels(drawn["noam_schedule"])
    curves = [line for line in ax.lines if line.get_label().startswith("warmup=")]
    assert [line.get_label() for line in curves] == ["warmup=100", "warmup=400"]
    for line, warmup in zip(curves, (100, 400)):
        rate = noam_schedule(64, warmup)  # what LambdaLR multiplies the learning rate by in training
        steps = line.get_xdata()
        assert list(steps) == list(range(1, 1001))
        np.testing.assert_allclose(line.get_ydata(), [rate(int(s)) for s in steps], rtol=1e-10)


def test_label_smoothing_bars_are_the_smoothed_targets(drawn, tmp_path):
    pf.plot_label_smoothing(tmp_path / "label_smoothing.png", vocab_size=6, target=2, epsilons=(0.0, 0.3))
    (ax,) = panels(drawn["label_smoothing"])
    sharp, smooth = ([r.get_height() for r in c] for c in ax.containers)
    np.testing.assert_allclose(sharp, [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(smooth, [0.05, 0.05, 0.75, 0.05, 0.05, 0.05])  # eps / V, + 1 - eps at 2


def test_embedding_figure_shows_the_norms_and_cosine_similarities(drawn, tmp_path):
    weight = np.random.default_rng(0).normal(size=(12, 8))
    tokens = [f"t{i}" for i in range(12)]
    pf.plot_embedding_analysis(tmp_path / "embedding_analysis_x.png", weight, tokens, max_tokens=10)
    ax_hist, ax_cos = panels(drawn["embedding_analysis_x"])
    norms = np.linalg.norm(weight, axis=1)
    bars = ax_hist.patches
    counts, edges = np.histogram(norms, bins=len(bars))
    np.testing.assert_allclose([r.get_height() for r in bars], counts)
    np.testing.assert_allclose([r.get_x() for r in bars] + [bars[-1].get_x() + bars[-1].get_width()], edges)
    unit = weight[:10] / norms[:10, None]
    np.testing.assert_allclose(heatmap_of(ax_cos), unit @ unit.T, atol=1e-12)
    assert labels(ax_cos, "x") == tokens[:10] and labels(ax_cos, "y") == tokens[:10]
