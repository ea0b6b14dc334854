"""The training recipe both implementations share: the Noam schedule and the smoothed loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noam_schedule(d_model: int, warmup_steps: int, factor: float = 1.0):
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)  (section 5.3).

    Rises linearly for `warmup_steps`, then decays with the inverse square root of the step.
    Returned as a multiplier for LambdaLR on an optimizer whose base lr is 1.
    """

    def rate(step: int) -> float:
        step = max(step, 1)  # LambdaLR asks for step 0 once, at construction
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return rate


def seq2seq_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, smoothing: float, reduction: str = "mean"
):
    """Cross-entropy over non-PAD positions with label smoothing (section 5.4); mean or sum."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=smoothing,
        reduction=reduction,
    )


def out_of_time(budget_minutes: float, elapsed_s: float, epochs_done: int) -> bool:
    """True when another epoch, as long as the mean one so far, would end past the budget (0: none)."""
    if budget_minutes <= 0 or epochs_done <= 0:
        return False
    return elapsed_s + elapsed_s / epochs_done > 60 * budget_minutes
