"""Figures from training records and activation caches (matplotlib, Agg backend: no screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_training_curves(history: list[dict], path: str | Path, title: str = "Training") -> Path:
    """Loss per epoch (train and eval) and every accuracy-like metric in the records."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "eval_loss"):
        if all(key in r for r in history):
            ax_loss.plot(epochs, [r[key] for r in history], marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (label-smoothed)", title="Loss")
    ax_loss.legend()
    for key in sorted({k for r in history for k in r}):
        if key.endswith(("accuracy", "exact_match", "bleu")) and all(key in r for r in history):
            ax_acc.plot(epochs, [r[key] for r in history], marker="o", label=key)
    ax_acc.set(xlabel="epoch", ylabel="score", title="Held-out scores")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
