"""Dropout whose random mask costs a sixth of torch's on the CPU: one 64-bit draw, four elements.

torch's CPU dropout draws one Mersenne-Twister number per element (`aten::bernoulli_`, 14% of
a training step of the default model in torch.profiler). Here one draw of 64 random bits
serves four elements: each keeps its value when its 16 bits, read as a signed number, reach
the threshold of p, so p is rounded to a multiple of 1/65536 (0.1 becomes 0.100006).

Same contract as `F.dropout`: identity when not training or p == 0; kept values scaled by
1 / (1 - p). On a GPU it is `F.dropout` (torch's GPU kernel is fast already).

Seam: a module swap. The readable models use `nn.Dropout`; `swap_dropout(model)` replaces each
with `Dropout` of the same p (dropout has no parameters: the state dict is unchanged). The
attention-weight dropout inside `F.scaled_dot_product_attention` is not a module and stays
torch's. tests/fast/test_fast_dropout.py checks the keep rate, the scale, independent masks, the
gradient and seeding; benchmarks/speed_pieces.py measures what it buys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_INT64_MIN = torch.iinfo(torch.int64).min


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(_INT64_MIN, None)  # full 64 bits
    threshold = round(p * 65536) - 32768  # int16 values at or above it are kept
    keep = bits.view(torch.int16)[:n].view(x.shape) >= threshold
    return x * keep.to(x.dtype).mul_(65536 / (32768 - threshold))  # 1 / (1 - rounded p)


class Dropout(nn.Dropout):
    """nn.Dropout with the mask of `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def swap_dropout(model: nn.Module) -> int:
    """Replace every `nn.Dropout` submodule of `model` with `Dropout` (same p); returns how many."""
    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, Dropout(child.p))
                swapped += 1
    return swapped
