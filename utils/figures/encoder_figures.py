"""The encoder-only tasks' own figures, from the numbers a run measured (matplotlib, Agg).

masking_distribution.png   what BERT's masking did to the tokens it trained on: the share chosen
                           (15% expected) and, of those, [MASK] / random / unchanged (80/10/10),
                           and the chosen share at each window position
confusion_matrix.png       a classifier's held-out answers: true class down, guess across
vit_cls_attention.png      a ViT's [CLS] attention to the patches over the image, per layer and head
patch_filters.png          a ViT's patch-embedding filters: each output channel's P x P weights
special_tokens.png         BERT's [CLS] [SEP] [MASK] <pad> vectors against the ordinary tokens'

The last three come from the activation cache and the model's parameters (write_analysis, either
version: `encoder_only_figures`); the first two from the numbers a pytorch_version run measured.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_masking(counts: dict, path: str | Path) -> Path:
    """`counts`: utils.data.masking.MaskingCounts.to_dict() of the training batches."""
    shares = counts["shares"]
    fig, (ax_kind, ax_pos) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = ["chosen\n(of maskable)", "[MASK]\n(of chosen)", "random\n(of chosen)", "unchanged\n(of chosen)"]
    measured = [shares["chosen"], shares["as_mask"], shares["as_random"], shares["unchanged"]]
    expected = [0.15, 0.8, 0.1, 0.1]
    x = range(len(names))
    ax_kind.bar([i - 0.2 for i in x], measured, width=0.4, label="measured")
    ax_kind.bar([i + 0.2 for i in x], expected, width=0.4, label="Devlin et al. 2019", alpha=0.6)
    for i, value in enumerate(measured):
        ax_kind.text(i - 0.2, value + 0.02, f"{value:.1%}", ha="center", fontsize=8)
    ax_kind.set_xticks(list(x), names, fontsize=8)
    ax_kind.set(ylim=(0, 1), title=f"BERT masking of {counts['maskable']:,} training tokens")
    ax_kind.legend()
    per_position = counts["per_position"][1:-1]  # without [CLS] and [SEP], never chosen
    batches = max(counts["maskable"], 1) / max(len(per_position), 1)
    ax_pos.plot(range(1, len(per_position) + 1), [c / batches for c in per_position], marker=".")
    ax_pos.axhline(0.15, ls="--", color="grey")
    ax_pos.set(xlabel="position in the window", ylabel="share chosen", ylim=(0, 0.3),
               title="chosen at each position")  # fmt: skip
    return _save(fig, path)


def plot_confusion(counts: list[list[int]], labels, path: str | Path) -> Path:
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, counts[i][j], ha="center", va="center", fontsize=8,
                    color="white" if counts[i][j] > max(map(max, counts)) / 2 else "black")  # fmt: skip
    total = sum(map(sum, counts))
    right = sum(counts[i][i] for i in range(n))
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"held-out: {right}/{total} right ({right / max(total, 1):.1%})",
    )
    return _save(fig, path)


def plot_patch_filters(weight, path: str | Path, max_filters: int = 64) -> Path:
    """A ViT's patch projection: each output channel's (C, P, P) Conv2d weights drawn as a P x P
    picture (channels averaged), on one colour scale centred on 0: red pixels push that dimension up,
    blue ones down. Trained filters look like edge and stroke detectors; fresh ones are noise."""
    w = torch.as_tensor(weight).detach().float().cpu()
    w = w.mean(1) if w.dim() == 4 else w  # (D, P, P)
    count = min(w.size(0), max_filters)
    ncols = min(count, 8)
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows + 0.6), squeeze=False)
    scale = float(w[:count].abs().max()) or 1.0
    for d, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if d >= count:
            ax.axis("off")
            continue
        ax.imshow(w[d].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(f"dim {d}", fontsize=7)
    P = w.size(-1)
    fig.suptitle(f"patch-embedding filters: {count} of {w.size(0)} output channels, {P} x {P} pixels each")
    return _save(fig, path)


def plot_vit_cls_attention(cache: dict, image, path: str | Path, example: int = 0) -> Path:
    """[CLS]'s attention to the patches drawn over the image, one panel per layer (rows) and head
    (columns): the image in grey, the weight on each patch in colour over its square. The classifier
    reads [CLS] alone, so these are the places the answer was gathered from."""
    from utils.observe.attention_maps import attention_layers
    from utils.observe.encoder_analysis import cls_grid

    img = torch.as_tensor(image).detach().float().cpu()
    img = img.mean(0) if img.dim() == 3 else img  # (H, W)
    layers = attention_layers(cache, "encoder", "self_attn")
    H = cache[f"encoder.{layers[0]}.self_attn.weights"].size(1)
    fig, axes = plt.subplots(len(layers), H + 1, figsize=(2.1 * (H + 1), 2.2 * len(layers)), squeeze=False)
    extent = (0, img.size(1), img.size(0), 0)
    for row, layer in zip(axes, layers):
        weights = cache[f"encoder.{layer}.self_attn.weights"][example].float().cpu()  # (H, S, S)
        row[0].imshow(img.numpy(), cmap="gray_r", extent=extent)
        row[0].set_title(f"layer {layer}: the image", fontsize=8)
        top = float(weights[:, 0, 1:].max())  # one colour scale per layer: its heads compare
        for h, ax in enumerate(row[1:]):
            grid = cls_grid(weights[h, 0])
            ax.imshow(img.numpy(), cmap="gray_r", extent=extent)
            if grid is not None:
                shown = ax.imshow(grid.numpy(), cmap="magma", alpha=0.6, extent=extent, vmin=0, vmax=top)
                if h == H - 1:
                    fig.colorbar(shown, ax=ax, fraction=0.046, label="weight")
            ax.set_title(f"head {h}: [CLS] keeps {float(weights[h, 0, 0]):.2f}", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("ViT: where [CLS] looks (attention from [CLS] to each patch)")
    return _save(fig, path)


def plot_special_tokens(section: dict, weight, vocab_tokens, path: str | Path) -> Path:
    """BERT's special tokens against the ordinary ones: the norm of every token vector (specials in
    colour), and each special token's cosine similarity to every ordinary token."""
    w = torch.as_tensor(weight).detach().float().cpu()
    specials = {t: e for t, e in section.items() if isinstance(e, dict) and "id" in e}
    start = max(e["id"] for e in specials.values()) + 1
    norms = w.norm(dim=-1)
    fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    ax_n.hist(norms[start:].numpy(), bins=20, color="lightgrey", label="ordinary tokens")
    for k, (token, entry) in enumerate(specials.items()):
        ax_n.axvline(float(norms[entry["id"]]), color=f"C{k}", lw=2, label=token)
    ax_n.set(xlabel="L2 norm of the token vector", ylabel="tokens", title="norms: special vs ordinary")
    ax_n.legend(fontsize=7)
    unit = torch.nn.functional.normalize(w, dim=-1)
    ids = [e["id"] for e in specials.values()]
    cos = (unit[ids] @ unit[start:].T).numpy()  # (specials, ordinary)
    ax_c.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax_c.set_yticks(range(len(ids)), list(specials))
    ordinary = (
        list(vocab_tokens[start:]) if vocab_tokens is not None else [str(i) for i in range(start, len(w))]
    )
    step = max(1, len(ordinary) // 40)
    ax_c.set_xticks(range(0, len(ordinary), step), ordinary[::step], fontsize=6)
    ax_c.set(title="cosine similarity to each ordinary token")
    return _save(fig, path)


def encoder_only_figures(
    model, cache: dict, src, report: dict, folder: str | Path, vocab_tokens=None
) -> list:
    """The encoder-only figures of write_analysis under `folder`: a ViT's vit_cls_attention.png (row 0's
    image) and patch_filters.png; BERT's special_tokens.png when the report found its special tokens."""
    from utils.observe.embeddings import embedding_weights, patch_projections

    folder, paths = Path(folder), []
    section = report.get("encoder_only") or {}
    if torch.as_tensor(src).dim() > 2:
        paths.append(plot_vit_cls_attention(cache, src[0], folder / "vit_cls_attention.png"))
        for weight in patch_projections(model).values():
            paths.append(plot_patch_filters(weight, folder / "patch_filters.png"))
    elif "special_tokens" in section:
        weight = embedding_weights(model)[section["special_tokens"]["weight"]]
        paths.append(plot_special_tokens(section["special_tokens"], weight, vocab_tokens,
                                         folder / "special_tokens.png"))  # fmt: skip
    return paths
