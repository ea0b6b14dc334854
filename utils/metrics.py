"""Scores for sequence-to-sequence outputs: token accuracy and exact match."""

from __future__ import annotations

import torch


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> tuple[int, int]:
    """Teacher-forced next-token accuracy: (correct, counted) over non-PAD target positions."""
    real = targets != pad_id
    correct = (logits.argmax(dim=-1) == targets) & real
    return int(correct.sum()), int(real.sum())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of outputs equal to their reference, character for character."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references)) / len(references)
