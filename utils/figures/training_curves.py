"""The training-curve figure: loss, held-out accuracy and BLEU/chrF per epoch (matplotlib, Agg).

Both trainers call `plot_training_curves(history, path)` after every epoch with the records of
logs/metrics.jsonl, so training_curves.png is always current, even after an interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_training_curves(history: list[dict], path: str | Path, title: str = "Training") -> Path:
    """Loss per epoch (train and eval) and every accuracy-like metric in the records; a language
    model's records (they have bits per character) are drawn against optimizer steps, with its
    bits per character and perplexity as the held-out scores."""
    lm = all("eval_bits_per_char" in r for r in history)
    epochs = [r["step" if lm else "epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "eval_loss"):
        if all(key in r for r in history):
            ax_loss.plot(epochs, [r[key] for r in history], marker="o", label=key)
    ax_loss.set(xlabel="step" if lm else "epoch", title="Loss",
                ylabel="nats per token" if lm else "cross-entropy (label-smoothed)")  # fmt: skip
    ax_loss.legend()
    keys = sorted({k for r in history for k in r if all(k in rec for rec in history)})
    for key in keys:
        if key.endswith(("accuracy", "exact_match", "bits_per_char", "perplexity")):
            ax_acc.plot(epochs, [r[key] for r in history], marker="o", label=key)
    ax_acc.set(xlabel="step" if lm else "epoch", ylabel="score", title="Held-out scores")
    ax_acc.legend(loc="upper left")
    text_scores = [k for k in keys if k.endswith(("bleu", "chrf"))]
    if text_scores:  # BLEU and chrF run from 0 to 100: a second axis, so accuracies stay readable
        ax_text = ax_acc.twinx()
        for n, key in enumerate(text_scores):
            ax_text.plot(epochs, [r[key] for r in history], marker="s", ls="--", color=f"C{n + 3}", label=key)
        ax_text.set(ylabel="BLEU / chrF (0-100)")
        ax_text.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
