"""Figures from training records and activation caches (matplotlib, Agg backend: no screen).

`TransformerVisualizer(out_dir)` writes under `out_dir/visualizations/` in the layout of
../shared/DESIGN.md: attention/ (heatmaps, attention_step_{N}, attention_evolution,
multihead_comparison), qkv/ (qkv_evolution, layer_contributions, gradient_flow) and
paper/ (the paper's components), plus report.md, which says how to read each figure.
It reads only the cache, the analysis report of `utils.observe.analysis` and plain arrays; the
model family (utils.observe.family: the report's "family", else the cache's names) says which
tokens label each axis: a decoder-only model's attention runs over the prompt then the completion.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch

from utils.figures import paper as pf
from utils.figures.paper import heatmap, new_figure, save_figure
from utils.observe.attention_maps import (
    ATTENTION_KINDS,
    attention_layers,
    attention_weights,
    axes_tokens,
    canonical_kind,
    layer_index,
    stack_and_module,
    trim,
)
from utils.observe.family import Family, family_of

SUBLAYER_COLORS = {"self_attn": "tab:blue", "cross_attn": "tab:orange", "ffn": "tab:green", "norm": "grey"}


def _axis_tokens(row_tokens, col_tokens, shape: tuple[int, int]):
    """(query labels, key labels): a (target, source) pair split in two; one list labels both axes of a
    square matrix; tokens for fewer positions than the matrix has are cut from it by `trim`."""
    pair = isinstance(row_tokens, tuple) and len(row_tokens) == 2 and not isinstance(row_tokens[0], str)
    if pair and col_tokens is None:
        return list(row_tokens[0]), list(row_tokens[1])
    if col_tokens is None and row_tokens is not None and shape[0] == shape[1]:
        return row_tokens, row_tokens
    return row_tokens, col_tokens


def _section(report: dict, key: str) -> dict:
    return report.get(key, report)  # the whole analysis report, or just its section


class TransformerVisualizer:
    """Writes the figure catalogue of one run; every method returns the path(s) it wrote."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir) / "visualizations"
        self.attention_dir, self.qkv_dir, self.paper_dir = (
            self.root / d for d in ("attention", "qkv", "paper")
        )

    # ---- attention ------------------------------------------------------------------------------
    def plot_attention_heatmap(self, weights, row_tokens=None, col_tokens=None, title="", path=None) -> Path:
        """Attention weights, queries down, keys across, labelled with the tokens: one head's (T, S)
        matrix, or every head of (H, T, S) side by side on one colour scale ((B, H, T, S): example 0).

        `row_tokens` label the queries (the target side) and `col_tokens` the keys (the source); one
        list labels both axes of a square matrix, and a pair (target tokens, source tokens) the two.
        """
        w = np.asarray(torch.as_tensor(weights).detach().float().cpu(), dtype=float)
        if w.ndim == 4:
            w = w[0]
        if w.ndim not in (2, 3):
            raise ValueError(f"attention weights are (T, S), (H, T, S) or (B, H, T, S); got shape {w.shape}")
        rows, cols = _axis_tokens(row_tokens, col_tokens, w.shape[-2:])
        path = path or self.attention_dir / "attention.png"
        if w.ndim == 3:
            return self._head_grid(w, rows, cols, title or "attention, all heads", path)
        w = trim(w, rows, cols)
        fig, ax = new_figure(figsize=(max(4.5, 0.45 * w.shape[1] + 2), max(3.5, 0.4 * w.shape[0] + 1.5)))
        heatmap(ax, w, rows, cols, vmin=0)
        ax.set(xlabel="key", ylabel="query", title=title)
        return save_figure(fig, path)

    def _head_grid(self, heads: np.ndarray, rows, cols, title: str, path: Path) -> Path:
        """(H, T, S) weights as a grid of heads, four to a row, on one shared colour scale."""
        H = heads.shape[0]
        ncols = min(H, 4)
        nrows = -(-H // ncols)
        fig, axes = new_figure(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
        vmax = float(heads.max())
        for h, ax in enumerate(axes.flat):
            if h >= H:
                ax.axis("off")
                continue
            last = h == H - 1  # one colour bar serves the shared scale
            heatmap(ax, trim(heads[h], rows, cols), rows, cols, annotate=False, vmin=0, vmax=vmax, cbar=last)
            ax.set(title=f"head {h}", xlabel="key", ylabel="query")
        fig.suptitle(title)
        return save_figure(fig, path)

    def plot_attention_for_example(
        self, cache, src_tokens, tgt_tokens, layer=0, kind="decoder_cross", head=None, example=0,
        family: Family | None = None,
    ) -> Path:  # fmt: skip
        """Heatmap of one layer's attention for one example (head-averaged when `head` is None).

        Pass the example's tokens without padding to crop the padded positions away.
        """
        kind = canonical_kind(kind)
        rows, cols = axes_tokens(kind, src_tokens, tgt_tokens, family or family_of(cache))
        w = trim(attention_weights(cache, kind, layer, head, example), rows, cols)
        name = f"{kind}_layer{layer}" + ("" if head is None else f"_head{head}")
        which = "mean of heads" if head is None else f"head {head}"
        title = f"{kind.replace('_', ' ')} attention, layer {layer}, {which}"
        return self.plot_attention_heatmap(w, rows, cols, title, self.attention_dir / f"{name}.png")

    def plot_multihead_comparison(
        self,
        cache,
        layer=-1,
        kind="decoder_cross",
        src_tokens=None,
        tgt_tokens=None,
        example=0,
        name="multihead_comparison",
        family: Family | None = None,
    ) -> Path:
        """All heads of one layer in a grid, on one colour scale."""
        kind = canonical_kind(kind)
        stack, module = stack_and_module(kind)
        index = layer_index(cache, stack, module, layer)
        heads = torch.as_tensor(cache[f"{stack}.{index}.{module}.weights"][example]).float().cpu().numpy()
        rows, cols = axes_tokens(kind, src_tokens, tgt_tokens, family or family_of(cache))
        title = f"{kind.replace('_', ' ')} attention, layer {index}: all heads"
        return self._head_grid(heads, rows, cols, title, self.attention_dir / f"{name}.png")

    def plot_attention_step(self, weights, row_tokens, step: int, col_tokens=None) -> Path:
        """attention_step_{step}.png: the tracked head at one training step."""
        cols = col_tokens if col_tokens is not None else row_tokens
        w = trim(np.asarray(weights, dtype=float), row_tokens, cols)
        path = self.attention_dir / f"attention_step_{step}.png"
        return self.plot_attention_heatmap(w, row_tokens, cols, f"Attention at step {step}", path)

    def plot_attention_evolution(self, snapshots, row_tokens=None, col_tokens=None, max_panels=8) -> Path:
        """attention_evolution.png from [(step, (T, S) weights), ...] of the same head."""
        if not snapshots:
            raise ValueError("plot_attention_evolution needs at least one (step, weights) snapshot, got none")
        picks = np.unique(
            np.linspace(0, len(snapshots) - 1, min(max_panels, len(snapshots))).round().astype(int)
        )
        cols = col_tokens if col_tokens is not None else row_tokens
        fig, axes = new_figure(1, len(picks), figsize=(4.2 * len(picks), 4), squeeze=False)
        for ax, i in zip(axes.flat, picks):
            step, w = snapshots[i]
            w = trim(np.asarray(w, dtype=float), row_tokens, cols)
            heatmap(ax, w, row_tokens, cols, annotate=False, vmin=0, vmax=1, cbar=False)
            ax.set(title=f"step {step}", xlabel="key", ylabel="query")
        return save_figure(fig, self.attention_dir / "attention_evolution.png")

    # ---- Q/K/V, layers, gradients -----------------------------------------------------------------
    def plot_qkv_evolution(self, history) -> Path:
        """qkv_evolution.png from [(step, analyze_qkv_statistics(...)), ...]: head means per sublayer."""
        if not history:
            raise ValueError("plot_qkv_evolution needs at least one (step, statistics) record, got none")
        metrics = ("q_norm", "k_norm", "v_norm", "score_std_scaled")
        fig, axes = new_figure(2, 2, figsize=(12, 7.5))
        steps = [step for step, _ in history]
        for ax, metric in zip(axes.flat, metrics):
            for name in history[-1][1]:  # one line per attention sublayer, heads averaged
                values = [
                    np.mean([h[metric] for h in stats[name]]) if name in stats else np.nan
                    for _, stats in history
                ]
                ax.plot(steps, values, marker="o", ms=3, label=name)
            ax.set(xlabel="step", title=metric.replace("_", " "))
        axes.flat[0].legend(fontsize=7)
        return save_figure(fig, self.qkv_dir / "qkv_evolution.png")

    def plot_layer_contributions(self, report: dict) -> Path:
        """layer_contributions.png: relative update per sublayer, and dead ReLU share per FFN."""
        section = _section(report, "layer_contributions")
        fig, (ax_u, ax_d) = new_figure(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
        layers = list(dict.fromkeys(e["layer"] for e in section["sublayers"]))
        width = 0.27
        for n, sub in enumerate(("self_attn", "cross_attn", "ffn")):
            ratio = {e["layer"]: e["relative_update"] for e in section["sublayers"] if e["sublayer"] == sub}
            if not ratio:
                continue
            x, y = zip(*[(i + (n - 1) * width, ratio[la]) for i, la in enumerate(layers) if la in ratio])
            ax_u.bar(x, y, width, label=sub, color=SUBLAYER_COLORS[sub])
        ax_u.set_xticks(range(len(layers)), layers)
        ax_u.set(ylabel="||sublayer output|| / ||residual||", title="Sublayer updates relative to the stream")
        ax_u.legend()
        ffn = section["ffn"]
        ax_d.bar([e["layer"] for e in ffn], [e["dead_fraction"] for e in ffn], color=SUBLAYER_COLORS["ffn"])
        activation = (report.get("config") or {}).get("activation", "relu").upper()
        off = "share of ReLU outputs = 0" if activation == "RELU" else f"share of {activation} inputs <= 0"
        ax_d.set(ylim=(0, 1), ylabel=off, title="FFN activations that are off")
        ax_d.tick_params(axis="x", labelrotation=45)
        return save_figure(fig, self.qkv_dir / "layer_contributions.png")

    def plot_gradient_flow(self, report: dict) -> Path:
        """gradient_flow.png: gradient norm per parameter group, from embeddings to lm_head."""
        groups = _section(report, "gradient_flow")["groups"]
        names = list(groups)
        colors = [SUBLAYER_COLORS.get(n.split(".")[-1], "tab:purple") for n in names]
        fig, ax = new_figure(figsize=(8, 0.3 * len(names) + 1.5))
        ax.barh(names, [max(groups[n] or 0.0, 1e-12) for n in names], color=colors)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set(xlabel="gradient L2 norm (log scale)", title="Gradient flow by parameter group")
        return save_figure(fig, self.qkv_dir / "gradient_flow.png")

    # ---- the paper's components ---------------------------------------------------------------------
    def plot_paper_figures(
        self,
        embedding_weights: dict | None = None,
        d_model: int = 64,
        tokens=None,
        src_tokens=None,
        tgt_tokens=None,
    ) -> list[Path]:
        """Positional encoding, masks, Noam schedule, label smoothing, and one embedding figure per matrix.

        `tokens` label the embedding rows (the vocabulary in id order).
        """
        d = self.paper_dir
        paths = [
            pf.plot_positional_encoding(d / "positional_encoding.png", d_model=d_model),
            pf.plot_masks(d / "masks.png", src_tokens, tgt_tokens),
            pf.plot_noam_schedule(d / "noam_schedule.png", d_model=d_model),
            pf.plot_label_smoothing(d / "label_smoothing.png"),
        ]
        for name, weight in (embedding_weights or {}).items():
            stem = "embedding_analysis_" + re.sub(r"\W+", "_", name).strip("_")
            w = torch.as_tensor(weight).float().cpu().numpy()
            paths.append(pf.plot_embedding_analysis(d / f"{stem}.png", w, tokens, name=name))
        return paths

    # ---- the catalogue ------------------------------------------------------------------------------
    def write_report_md(self, folder: str | Path | None = None) -> Path:
        """report.md in `folder` (default: the visualizations folder): every PNG, how to read it."""
        return pf.write_report_md(folder if folder is not None else self.root)

    def plot_all(
        self,
        report: dict,
        cache: dict,
        src_tokens=None,
        tgt_tokens=None,
        embedding_weights=None,
        vocab_tokens=None,
        qkv_history=None,
        attention_snapshots=None,
        step: int = 0,
        report_folder: str | Path | None = None,
    ) -> list[Path]:
        """Every figure from one analysis report and one cache (example 0), then report.md.

        Without `qkv_history` / `attention_snapshots` (collected during training) the
        evolution figures show this one step. The tracked head is head 0 of the family's tracked
        attention in the last layer: the cross-attention, or a decoder-only model's self-attention.
        """
        family = family_of(cache, name=report.get("family"))
        paths = []
        for kind, (stack, module) in ATTENTION_KINDS.items():
            for layer in attention_layers(cache, stack, module):
                paths.append(
                    self.plot_attention_for_example(cache, src_tokens, tgt_tokens, layer, kind, family=family)
                )
                name = f"multihead_comparison_{kind}_layer{layer}"
                paths.append(self.plot_multihead_comparison(
                    cache, layer, kind, src_tokens, tgt_tokens, name=name, family=family
                ))  # fmt: skip
        tracked_kind = family.tracked_kind
        paths.append(
            self.plot_multihead_comparison(cache, -1, tracked_kind, src_tokens, tgt_tokens, family=family)
        )
        tracked = attention_weights(cache, tracked_kind, -1, head=0)
        rows, cols = axes_tokens(tracked_kind, src_tokens, tgt_tokens, family)
        paths.append(self.plot_attention_step(tracked, rows, step, cols))
        paths.append(self.plot_attention_evolution(attention_snapshots or [(step, tracked)], rows, cols))
        paths.append(self.plot_qkv_evolution(qkv_history or [(step, report["qkv_statistics"])]))
        paths.append(self.plot_layer_contributions(report))
        paths.append(self.plot_gradient_flow(report))
        d_model = (report.get("config") or {}).get("hidden_size") or 64
        paths += self.plot_paper_figures(embedding_weights, d_model, vocab_tokens)
        paths.append(self.write_report_md(report_folder))
        return paths
