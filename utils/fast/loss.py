"""The label-smoothed loss of a training step with its gradient written down.

utils.training.recipe.labelled_loss_sum is F.cross_entropy with label smoothing; autograd
then goes back through the smoothing sum, the gather and log_softmax's backward: several
passes over the (N, V) logits, the largest tensor of a training step. Here the backward is
one exp and two in-place updates.

Seam: the loss function a trainer calls, chosen by utils.fast.SpeedUps (`written_down_loss`).
tests/fast/test_fast_pieces.py holds loss and gradient equal to the readable one.
"""

from __future__ import annotations

import torch

LOWEST_LOG_P = -87.0  # exp(-87) = 1.6e-38, the smallest normal float32 is 1.2e-38


class SmoothedCrossEntropySum(torch.autograd.Function):
    """seq2seq_loss(logits, targets, smoothing=eps, reduction="sum") for rows that all carry a label,
    with its gradient written down instead of traced through log_softmax.

    With q = (1 - eps) * onehot(target) + eps / V, the loss of a row is -sum_c q_c log p_c, and its
    gradient with respect to the logits is simply p - q. Autograd would instead go back through
    the smoothing sum, the gather and log_softmax's backward, several passes over the (N, V)
    logits, the largest tensor of a training step; here it is one exp and two in-place updates.
    tests/fast/test_fast_pieces.py checks loss and gradient against the readable loss.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
        log_probs = logits.log_softmax(-1)  # (N, V)
        nll = -log_probs.gather(1, targets[:, None]).sum()
        uniform = -log_probs.sum() / logits.size(-1)  # cross-entropy against the uniform distribution
        ctx.save_for_backward(log_probs, targets)
        ctx.smoothing = smoothing
        return (1 - smoothing) * nll + smoothing * uniform

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        log_probs, targets = ctx.saved_tensors
        eps = ctx.smoothing
        # exp below float32's range (-87.3: p < 1.2e-38, a subnormal) takes a slow path, 4.5x slower over
        # a trained model's logits, where most classes are that unlikely; clamped, p there is 1.6e-38
        # instead of a subnormal or zero (204 -> 45 ms over (2500, 8000) such log p on a 2-core EPYC)
        g = log_probs.clamp(min=LOWEST_LOG_P).exp_().sub_(eps / log_probs.size(-1))  # p - eps / V ...
        g.scatter_add_(1, targets[:, None], g.new_full((len(targets), 1), eps - 1))  # ... - (1 - eps) at y
        return g.mul_(grad), None, None


def labelled_loss_sum(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """utils.training.recipe.labelled_loss_sum, computed by SmoothedCrossEntropySum."""
    return SmoothedCrossEntropySum.apply(logits, targets, smoothing)
