"""The training recipe both implementations share: Adam, the Noam schedule and the smoothed loss; and
the GPT recipe (AdamW, warm-up and cosine decay) that --lr_schedule cosine chooses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-9  # section 5.3


def paper_adam(parameters, fused: bool = False) -> torch.optim.Adam:
    """Adam with beta1 0.9, beta2 0.98, eps 1e-9 (section 5.3) and lr 1: the Noam schedule's
    multiplier *is* the learning rate. `fused` is a speed-up (utils/fast/__init__.py chooses it)."""
    return torch.optim.Adam(parameters, lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)


def noam_schedule(d_model: int, warmup_steps: int, factor: float = 1.0):
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)  (section 5.3).

    Rises linearly for `warmup_steps`, then decays with the inverse square root of the step.
    Returned as a multiplier for LambdaLR on an optimizer whose base lr is 1. Step 0, the first
    optimizer step, gets the formula's value there, 0, exactly as transformers' `inverse_sqrt`
    schedule, which the Hugging Face version uses: both versions take the same steps.
    """

    def rate(step: int) -> float:
        if step == 0:  # min(0^-0.5, 0): the first update only starts Adam's moving averages
            return 0.0
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return rate


GPT_BETAS, GPT_EPS, MIN_LR_RATIO = (0.9, 0.99), 1e-8, 0.1  # nanoGPT's shakespeare_char; GPT-3 decays to 10%


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Weight decay pulls matrices (and embeddings) towards 0; biases and LayerNorm gains keep their scale."""
    return parameter.dim() >= 2


def optimizer_and_schedule(cfg, model: torch.nn.Module, total_steps: int, fused: bool = False):
    """The optimizer and the LambdaLR multiplier of a run (--lr_schedule, --weight_decay).

    noam:   the paper's Adam with lr 1 (AdamW when --weight_decay) and the Noam multiplier;
    cosine: AdamW at --learning_rate, linear warm-up over --warmup_steps, then half a cosine down to
            a tenth of it at `total_steps` (transformers' cosine_with_min_lr, min_lr_rate 0.1)."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if decays(n, p)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]  # fmt: skip
    if cfg.lr_schedule == "cosine":
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=GPT_BETAS, eps=GPT_EPS, fused=fused)
        return optimizer, cosine_schedule(cfg.warmup_steps, total_steps)
    if cfg.weight_decay > 0:
        optimizer = torch.optim.AdamW(groups, lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)
    else:
        optimizer = paper_adam(model.parameters(), fused=fused)
    return optimizer, noam_schedule(cfg.hidden_size, cfg.warmup_steps, cfg.lr_factor)


def cosine_schedule(warmup_steps: int, total_steps: int, min_ratio: float = MIN_LR_RATIO):
    """Multiplier: step / warmup while warming up, then min_ratio + (1 - min_ratio) * (1 + cos(pi t)) / 2
    with t going from 0 to 1 over the remaining steps (step by step what transformers computes)."""

    def rate(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))

    return rate


def noam_peak(d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    """The schedule's highest rate, at step `warmup_steps`: factor * d_model^-0.5 * warmup^-0.5. As the
    base rate of transformers' inverse_sqrt schedule it gives noam_schedule (huggingface_version/train.py)."""
    return factor * d_model**-0.5 * warmup_steps**-0.5


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


def labelled_loss_sum(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of (N, V) logits whose N targets are all real tokens (a
    training step's labelled positions). utils/fast/loss.py computes the same with its gradient
    written down."""
    return F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")


def mean_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys (averaged in float32, stored in the
    last one's dtypes): checkpoint averaging, paper section 6.1, for both versions."""
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(t.dtype)
        for name, t in states[-1].items()
    }


def out_of_time(budget_minutes: float, elapsed_s: float, epochs_done: int) -> bool:
    """True when another epoch, as long as the mean one so far, would end past the budget (0: none)."""
    if budget_minutes <= 0 or epochs_done <= 0:
        return False
    return elapsed_s + elapsed_s / epochs_done > 60 * budget_minutes
