"""Figures of the paper's components, computed here from the formulas, and shared drawing helpers.

Each figure is recomputed from the paper's equations with numpy, not taken from either
model, so it shows what the text says: sinusoidal positions (section 3.5), the padding
and look-ahead masks (3.2.3), the Noam learning rate (5.3), label smoothing (5.4), and
the geometry of a learned embedding matrix (3.4).

`READING_GUIDE` and `write_report_md` describe the whole catalogue for report.md.
Figures are drawn on `matplotlib.figure.Figure` objects, which need no screen and no
global pyplot state, and are saved as PNG.
"""

from __future__ import annotations

import fnmatch
import warnings
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

DPI = 100  # enough to read token labels; small files

# How to read each figure; the first pattern matching a file's stem wins (report.md).
READING_GUIDE = {
    "attention_step_*": "One head's attention at a training step: row = query, column = key; "
    "a sharp diagonal or anti-diagonal means the head has learnt where to look.",
    "attention_evolution": "The same head across training, left to right: a blur sharpening into a pattern.",
    "multihead_comparison*": "Every head of one layer side by side on one shared colour scale: "
    "heads that look alike are redundant, different ones divide the work.",
    "encoder_self_layer*": "Encoder self-attention (source to source), averaged over heads unless the name "
    "gives a head; each row sums to 1.",
    "decoder_self_layer*": "Decoder self-attention: the upper triangle is empty (the look-ahead mask).",
    "decoder_cross_layer*": "Cross-attention from output positions (rows) to source tokens (columns): "
    "for reversal, an anti-diagonal is the alignment the model found.",
    "qkv_evolution": "Mean norms of queries, keys and values and the spread of the scaled scores over "
    "training; scores with std far above 1 push the softmax towards one-hot.",
    "layer_contributions": "How much each sublayer changes the residual stream (||update|| / ||stream||) "
    "and the share of ReLU outputs that are zero in each FFN.",
    "gradient_flow": "Gradient norm per parameter group after one backward pass (log scale): "
    "groups near zero learn nothing, outsized ones may need clipping.",
    "positional_encoding": "The sinusoidal position table (section 3.5): each dimension is a wave "
    "whose wavelength grows with the dimension.",
    "masks": "Padding, look-ahead and combined masks (section 3.2.3): dark green cells may be attended to.",
    "noam_schedule": "The Noam learning rate (section 5.3): linear warm-up, then decay as 1/sqrt(step).",
    "label_smoothing": "Target distributions for several epsilons (section 5.4): smoothing moves "
    "probability from the true token to all the others.",
    "embedding_analysis*": "Token-embedding norms and cosine similarities: similar tokens show as red "
    "cells off the diagonal, opposite ones as blue.",
    "vit_cls_attention": "A ViT's [CLS] attention to each patch, drawn over the image (rows: layers, "
    "columns: heads): the classifier reads [CLS] alone, so bright squares are where the answer came from.",
    "patch_filters": "A ViT's patch embedding: each output dimension's P x P weights on the pixels of a "
    "patch (red: pushes it up, blue: down); trained ones look like strokes and edges, fresh ones like noise.",
    "special_tokens": "BERT's [CLS] [SEP] [MASK] <pad> vectors against the ordinary tokens': their norms "
    "and how alike each is to every character; a [CLS] unlike any character is free to summarise the input.",
    "masking_distribution": "What BERT's masking did to the training tokens: 15% chosen, of those 80% "
    "[MASK], 10% random, 10% unchanged, and the chosen share at each position.",
    "confusion_matrix": "A classifier's held-out answers: true class down, guess across; off-diagonal "
    "cells are the confusions.",
    "training_curves": "Loss and held-out scores per epoch (translation: BLEU and chrF on the right axis).",
    "dataset_statistics": "The training corpus as the model sees it: tokens per sentence on each side, "
    "source against target length, sentences per batch, and the share of each batch that is <pad> "
    "(length-bucketed batches against random ones).",
}


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(6, 4), **kwargs):
    """A figure and its axes (one Axes, or an array when there are several; squeeze=False: always 2-D)."""
    fig = Figure(figsize=figsize, layout="constrained")  # room for labels without a second draw
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def tick_labels(tokens, n: int) -> list[str]:
    """Token strings for n positions: the given ones (cut to n), else the position numbers."""
    return [str(t) for t in tokens][:n] if tokens is not None else [str(i) for i in range(n)]


def heatmap(ax, matrix, rows=None, cols=None, annotate: bool | None = None, **kwargs):
    """seaborn heatmap with token labels; values are written in the cells of small matrices."""
    matrix = np.asarray(matrix, dtype=float)
    T, S = matrix.shape
    if annotate is None:
        annotate = T <= 12 and S <= 12
    labels = {"xticklabels": tick_labels(cols, S), "yticklabels": tick_labels(rows, T)}
    kwargs = {"cmap": "viridis", **labels, **kwargs}
    with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib 3.11 deprecates
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="seaborn")
        sns.heatmap(matrix, ax=ax, annot=annotate, fmt=".2f", annot_kws={"size": 7}, **kwargs)
    ax.tick_params(axis="x", labelrotation=0 if S <= 20 else 90)
    ax.tick_params(axis="y", labelrotation=0)
    return ax


# ---- section 3.5: positions --------------------------------------------------------------
def sinusoidal_encoding(max_len: int, d_model: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)) -> (max_len, d)."""
    pos = np.arange(max_len)[:, None]
    angle = pos / np.power(10000.0, np.arange(0, d_model, 2) / d_model)  # (max_len, d/2)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle[:, : d_model // 2])
    return pe


def plot_positional_encoding(path, d_model: int = 64, max_len: int = 100, dims=None):
    """The (max_len, d_model) table, and a few of its dimensions as waves over the positions."""
    pe = sinusoidal_encoding(max_len, d_model)
    if dims is None:  # a sin/cos pair at the start, a quarter and half way through the dimensions
        dims = sorted(
            {d for base in (0, d_model // 4, d_model // 2) for d in (base - base % 2, base - base % 2 + 1)}
        )
    fig, (ax_m, ax_d) = new_figure(1, 2, figsize=(12, 4.5))
    heatmap(
        ax_m, pe, annotate=False, cmap="RdBu_r", center=0, xticklabels=max(1, d_model // 8), yticklabels=10
    )
    ax_m.set(xlabel="dimension", ylabel="position", title=f"Sinusoidal encoding (d_model={d_model})")
    for d in dims:
        ax_d.plot(pe[:, d], label=f"dim {d} ({'sin' if d % 2 == 0 else 'cos'})")
    ax_d.set(xlabel="position", ylabel="value", title="Low dimensions turn fast, high ones slowly")
    ax_d.legend(fontsize=8)
    return save_figure(fig, path)


# ---- section 3.2.3: masks -----------------------------------------------------------------
def plot_masks(path, src_tokens=None, tgt_tokens=None, pad_token: str = "<pad>"):
    """Padding mask (source), look-ahead mask, and their AND used in decoder self-attention."""
    src = list(src_tokens) if src_tokens is not None else ["h", "e", "l", "l", "o", "</s>", pad_token]
    tgt = list(tgt_tokens) if tgt_tokens is not None else ["<s>", "o", "l", "l", "e", "h", pad_token]
    src_real, tgt_real = np.array([t != pad_token for t in src]), np.array([t != pad_token for t in tgt])
    T = len(tgt)
    padding = np.broadcast_to(src_real, (len(src), len(src)))
    look_ahead = np.tril(np.ones((T, T), dtype=bool))
    combined = look_ahead & tgt_real[None, :]
    fig, axes = new_figure(1, 3, figsize=(15, 4.5))
    panels = (
        (padding, src, src, "Encoder padding mask: keys that are <pad> are hidden"),
        (look_ahead, tgt, tgt, "Look-ahead mask: position i sees j <= i"),
        (combined, tgt, tgt, "Decoder self-attention: look-ahead AND padding"),
    )
    for ax, (mask, rows, cols, title) in zip(axes, panels):
        heatmap(ax, mask.astype(float), rows, cols, annotate=False, cmap="Greens", vmin=0, vmax=1, cbar=False)
        ax.set(xlabel="key", ylabel="query", title=title)
    return save_figure(fig, path)


# ---- section 5.3: learning rate ---------------------------------------------------------------
def noam_rate(step, d_model: int, warmup: int, factor: float = 1.0):
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    step = np.maximum(np.asarray(step, dtype=float), 1.0)
    return factor * d_model**-0.5 * np.minimum(step**-0.5, step * warmup**-1.5)


def plot_noam_schedule(path, d_model: int = 512, warmups=(1000, 4000, 8000), total_steps: int = 20000):
    steps = np.arange(1, total_steps + 1)
    fig, ax = new_figure(figsize=(7, 4))
    for w in warmups:
        ax.plot(steps, noam_rate(steps, d_model, w), label=f"warmup={w}")
        ax.axvline(w, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=f"Noam schedule (d_model={d_model})")
    ax.legend()
    return save_figure(fig, path)


# ---- section 5.4: label smoothing -------------------------------------------------------------
def smoothed_target(vocab_size: int, target: int, epsilon: float) -> np.ndarray:
    """The target `F.cross_entropy(label_smoothing=eps)` uses: eps / V everywhere, + 1 - eps on the truth."""
    dist = np.full(vocab_size, epsilon / vocab_size)
    dist[target] += 1.0 - epsilon
    return dist


def plot_label_smoothing(path, vocab_size: int = 12, target: int = 5, epsilons=(0.0, 0.1, 0.3)):
    fig, ax = new_figure(figsize=(8, 4))
    width = 0.8 / len(epsilons)
    for n, eps in enumerate(epsilons):
        x = np.arange(vocab_size) + (n - (len(epsilons) - 1) / 2) * width
        ax.bar(x, smoothed_target(vocab_size, target, eps), width, label=f"epsilon={eps}")
    ax.set(xlabel="token id", ylabel="target probability", title=f"Label smoothing, true token {target}")
    ax.set_yscale("log")
    ax.legend()
    return save_figure(fig, path)


# ---- section 3.4: embeddings ------------------------------------------------------------------
def plot_embedding_analysis(path, weight, tokens=None, max_tokens: int = 40, name: str = "embedding"):
    """Histogram of row norms and the cosine similarity of the first `max_tokens` rows."""
    w = np.asarray(weight, dtype=float)
    norms = np.linalg.norm(w, axis=1)
    unit = w[:max_tokens] / np.maximum(norms[:max_tokens, None], 1e-12)
    fig, (ax_h, ax_c) = new_figure(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.4]})
    ax_h.hist(norms, bins=min(30, max(5, len(norms) // 3)), color="tab:blue")
    ax_h.set(
        xlabel="L2 norm of the token vector", ylabel="tokens", title=f"{name}: norms ({len(norms)} tokens)"
    )
    labels = tick_labels(tokens, len(unit))
    heatmap(ax_c, unit @ unit.T, labels, labels, annotate=False, cmap="RdBu_r", vmin=-1, vmax=1)
    ax_c.set(title="Cosine similarity between token vectors")
    return save_figure(fig, path)


def write_report_md(folder: str | Path) -> Path:
    """folder/report.md: every PNG under `folder` with the READING_GUIDE sentence for it."""
    folder = Path(folder)
    lines = ["# Figures", "", "Each figure of this run, with a sentence on how to read it.", ""]
    for png in sorted(folder.rglob("*.png")):
        rel = png.relative_to(folder).as_posix()
        sentence = next((s for pat, s in READING_GUIDE.items() if fnmatch.fnmatch(png.stem, pat)), None)
        lines += [f"## {rel}", "", f"![{png.stem}]({rel})", "", sentence or "A figure of this run.", ""]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
