"""float32_attention: under CPU bfloat16 autocast, the fused attention kernel computed in float32.

Measured with benchmarks/utilisation.py's shapes (Xeon with AMX, 2 threads, torch 2.13, median of 5):
under --bf16 a training step's matrix products run 3.5x faster than in float32, but the backward of
torch's fused CPU attention kernel in bfloat16 is 12x slower than in float32 (525 ms against 45 ms
over 3 steps of the encoder-decoder), so the whole step ended slower than float32's (0.81x). With the
attention alone computed in float32 (q, k and v cast up, the output cast back to bfloat16) the step
is 1.56x float32's in one A/B process (the GPT's 1.89x, BERT's 1.28x), 1.46-1.62x (GPT 1.78-1.93x,
BERT 1.40x) in two pairs of benchmarks/utilisation.py runs. Anywhere else (no autocast, float16,
CUDA) it is torch's kernel, unchanged.

The seam: the attention-function registry of pytorch_version/attention.py, ATTENTION_FUNCTIONS (as
transformers' ALL_ATTENTION_FUNCTIONS), where `attention` is registered as FLOAT32_UNDER_BF16;
SpeedUps.plug_in points each MultiHeadAttention's `attention_function` at it. The packed training
steps of utils/fast (packing.py, decoder_only.py, encoder_only.py) call `attention` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pytorch_version.attention import ATTENTION_FUNCTIONS


def _cpu_bf16_autocast(q: torch.Tensor) -> bool:
    return (q.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)  # fmt: skip


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, **kwargs), in float32 under CPU bfloat16 autocast."""
    if not _cpu_bf16_autocast(q):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with torch.autocast("cpu", enabled=False):
        z = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return z.to(torch.bfloat16)


FLOAT32_UNDER_BF16 = "sdpa_float32_under_bf16"
ATTENTION_FUNCTIONS[FLOAT32_UNDER_BF16] = attention
