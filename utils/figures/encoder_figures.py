"""The encoder-only tasks' own figures, from the numbers a run measured (matplotlib, Agg).

masking_distribution.png   what BERT's masking did to the tokens it trained on: the share chosen
                           (15% expected) and, of those, [MASK] / random / unchanged (80/10/10),
                           and the chosen share at each window position
confusion_matrix.png       a classifier's held-out answers: true class down, guess across
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


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
