"""What the training data looks like to the model: lengths in tokens, batches and their padding.

`report_data` logs the padding ratio of the training batches when training starts and, for
translation, draws visualizations/dataset_statistics.png; its numbers go into summary.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from utils.data.batching import TokenBatchSampler, padding_ratio
from utils.data.tokenizer import UNK_ID
from utils.figures.paper import new_figure, save_figure

logger = logging.getLogger(__name__)


def _random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def batch_statistics(loader) -> dict:
    """Sizes and padding of one epoch of `loader`'s batches, next to random batches of the same mean size."""
    dataset = loader.dataset
    src, tgt = dataset.src_lengths, dataset.tgt_lengths
    sampler = loader.batch_sampler
    while hasattr(sampler, "inner"):  # a wrapper (torchrun's share, a resumable pass): the whole epoch
        sampler = sampler.inner
    if isinstance(sampler, TokenBatchSampler):
        batches, batching = sampler.preview(), f"max_tokens={sampler.max_tokens}"
    else:
        batches, batching = _random_batches(len(src), loader.batch_size), f"batch_size={loader.batch_size}"
    mean_sentences = len(src) / len(batches)
    unk = sum(ids.count(UNK_ID) for side in (dataset.src, dataset.tgt) for ids in side)
    return {
        "batching": batching,
        "sentences": len(src),
        "batches_per_epoch": len(batches),
        "mean_sentences_per_batch": round(mean_sentences, 1),
        "src_tokens": sum(src),
        "tgt_tokens": sum(tgt),
        "mean_src_tokens": round(float(np.mean(src)), 2),
        "mean_tgt_tokens": round(float(np.mean(tgt)), 2),
        "max_src_tokens": max(src),
        "max_tgt_tokens": max(tgt),
        "unk_rate": unk / max(sum(src) + sum(tgt), 1),
        "padding_ratio": round(padding_ratio(src, tgt, batches), 4),
        "random_batch_padding_ratio": round(
            padding_ratio(src, tgt, _random_batches(len(src), max(1, round(mean_sentences)))), 4
        ),
        "_batches": batches,  # for the figure; dropped from the report
    }


def plot_dataset_statistics(dataset, stats: dict, path: str | Path) -> Path:
    """Length distributions, source vs target length, sentences per batch, padding ratios."""
    src, tgt = np.array(dataset.src_lengths), np.array(dataset.tgt_lengths)
    words = [
        np.mean([len(s.split()) for s, _ in dataset.pairs]),
        np.mean([len(t.split()) for _, t in dataset.pairs]),
    ]
    fig, axes = new_figure(2, 2, figsize=(12, 8))
    (ax_len, ax_pair), (ax_batch, ax_pad) = axes
    bins = np.arange(0, max(src.max(), tgt.max()) + 2)
    ax_len.hist(
        src,
        bins=bins,
        alpha=0.6,
        label=f"source: mean {src.mean():.1f} ({src.mean() / words[0]:.2f} per word)",
    )
    ax_len.hist(
        tgt,
        bins=bins,
        alpha=0.6,
        label=f"target: mean {tgt.mean():.1f} ({tgt.mean() / words[1]:.2f} per word)",
    )
    ax_len.set(xlabel="tokens per sentence (with </s>)", ylabel="sentences", title="Sentence lengths")
    ax_len.legend(fontsize=8)
    counts, xedges, yedges = np.histogram2d(src, tgt, bins=[bins, bins])
    ax_pair.pcolormesh(xedges, yedges, np.log1p(counts.T), cmap="viridis")
    ax_pair.plot(bins, bins, color="white", lw=0.8, ls=":")
    ax_pair.set(xlabel="source tokens", ylabel="target tokens", title="Source vs target length (log count)")
    sizes = [len(b) for b in stats["_batches"]]
    ax_batch.hist(sizes, bins=30, color="tab:green")
    ax_batch.set(xlabel="sentences per batch", ylabel="batches",
                 title=f"{stats['batches_per_epoch']} batches per epoch ({stats['batching']})")  # fmt: skip
    ratios = {
        "these batches": stats["padding_ratio"],
        "random batches\nof the same size": stats["random_batch_padding_ratio"],
    }
    bars = ax_pad.bar(list(ratios), [100 * r for r in ratios.values()], color=["tab:blue", "tab:grey"])
    ax_pad.bar_label(bars, fmt="%.1f%%")
    ax_pad.set(ylabel="padded positions (%)", title="Compute spent on <pad>")
    return save_figure(fig, path)


def report_data(cfg, out: Path, train_loader) -> dict:
    """Log the training batches' padding ratio; translation: also the dataset statistics figure."""
    stats = batch_statistics(train_loader)
    logger.info(
        "training batches (%s): %d per epoch, %.1f sentences each on average, padding ratio %.1f%% "
        "(random batches of that size: %.1f%%)",
        stats["batching"], stats["batches_per_epoch"], stats["mean_sentences_per_batch"],
        100 * stats["padding_ratio"], 100 * stats["random_batch_padding_ratio"],
    )  # fmt: skip
    if cfg.task == "translation":
        path = plot_dataset_statistics(
            train_loader.dataset, stats, out / "visualizations" / "dataset_statistics.png"
        )
        logger.info("dataset statistics in %s", path)
    return {"data": {k: v for k, v in stats.items() if not k.startswith("_")}}
