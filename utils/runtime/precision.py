"""--precision: the number format a training step computes in, and, for `auto`, why that one.

  fp32  float32 everywhere.
  bf16  bfloat16 autocast: matrix products in bfloat16, the rest (softmax, LayerNorm, the loss) in
        float32. bfloat16 keeps float32's exponent, so no loss scaling is needed.
  fp16  float16 autocast with loss scaling: a CUDA GPU and the HF Trainer only (float16's range is
        small enough that gradients underflow without the scaler the Trainer brings).
  auto  the default: bfloat16 only where it is faster, else float32; the log says which and why.
        A rule, not a timing at start-up, so that the same flags on the same machine always train the
        same numbers (timing on a busy 2-core machine flipped between the two from run to run):
        - A CUDA GPU that supports bfloat16 (Ampere and later): bf16, run on its tensor cores.
        - On a CPU with bfloat16 instructions (avx512_bf16, or AMX tiles): bf16 for a model at least
          `BF16_MIN_WIDTH` wide, fp32 below. Measured side by side on an AMD EPYC with avx512_bf16
          and no AMX (benchmarks/precision.py, float32_attention on), training steps in bf16
          against float32: 1.60-1.77x for an encoder-decoder of d 256 (the translation recipe's
          width) and 1.93-2.10x for the GPT at d 256. At d 128 the gain depends on the family and
          the run: 1.0-1.15x for the default toy run (small products, and packed batches whose
          shape changes every step, while bfloat16 kernels are prepared per shape), 1.01-1.07x for
          the ViT, 1.44x for BERT. Below 256 auto keeps float32; `--precision bf16` is there for it.
          The HF version trains through the same packed step (utils/fast), so the same rule holds:
          a toy epoch at d 256 took 15-16 s in float32 and 11-13 s in bf16.
        - fp32 wherever the attention itself would run in bfloat16: --no-fast, and the HF version
          with --track_internals (its hooks need the model's own forward, transformers' fused
          kernel). That kernel's bfloat16 backward is 12x slower than its float32 one on a CPU;
          float32_attention (utils/fast/attention.py) computes it in float32 on the fast path.
        - A CPU without bfloat16 instructions (AVX2 only): fp32; torch emulates bfloat16 there.
A resumed run keeps the precision the run it continues chose (utils.runtime.compatibility).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import torch

from utils.runtime.errors import UserError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MIN_WIDTH = 256  # auto on a CPU with bf16 instructions: the narrowest model it trains in bf16


@dataclass(frozen=True)
class Choice:
    """A resolved precision ('fp32', 'bf16' or 'fp16') and the sentence the log gives for it."""

    name: str
    why: str


def check_precision(precision: str, version: str, device: torch.device) -> None:
    """An explicit precision this device (and this version) can run; auto always can."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            f"--precision fp16 needs a CUDA GPU; this run is on the {device.type} (drop it, or try bf16)"
        )
    if precision == "fp16" and version != "huggingface":
        raise UserError("--precision fp16 is for --version huggingface (it needs the Trainer's loss "
                        "scaling); pytorch_version has bf16")  # fmt: skip
    if precision == "bf16" and not bf16_runs_on(device):
        raise UserError(f"--precision bf16 is not supported on this {device.type} by this torch; use fp32")


def bf16_runs_on(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"  # torch's CPU autocast runs bfloat16 anywhere; fast only with bf16_units()


def bf16_units() -> str:
    """The CPU's bfloat16 matrix instructions torch detects ('AMX tiles', 'avx512_bf16'), or ''."""
    for name, probe in (
        ("AMX tiles", "_is_amx_tile_supported"),
        ("avx512_bf16", "_is_avx512_bf16_supported"),
    ):
        if getattr(torch.cpu, probe, lambda: False)():
            return name
    return ""


def choose(precision: str, device: torch.device, width: int, float32_attention: bool = True) -> Choice:
    """Resolve --precision for a run on `device` of a model `width` wide (hidden_size), whose training
    step computes the attention in float32 under bf16 (`float32_attention`) or not."""
    if precision != "auto":
        return Choice(precision, f"--precision {precision}")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Choice("bf16", f"auto: {gpu} computes bfloat16 on its tensor cores")
        return Choice("fp32", f"auto: {gpu} has no bfloat16 support")
    if device.type != "cpu":
        return Choice("fp32", f"auto: float32 on {device.type}")
    units = bf16_units()
    if not units:
        return Choice("fp32", "auto: this CPU has no bfloat16 instructions (avx512_bf16, AMX)")
    if not float32_attention:
        return Choice("fp32", "auto: this run's attention would compute in bfloat16, whose backward is slow "
                              "on CPUs (--no-fast, or the HF version with --track_internals)")  # fmt: skip
    if width < BF16_MIN_WIDTH:
        return Choice("fp32", f"auto: at hidden_size {width} bfloat16 is no faster on this CPU's {units}; "
                              f"bf16 from {BF16_MIN_WIDTH}")  # fmt: skip
    return Choice("bf16", f"auto: a model {width} wide trains 1.6-2.1x faster in bfloat16 with this CPU's "
                          f"{units} (benchmarks/precision.py)")  # fmt: skip


def resolve(cfg, device: torch.device, version: str, saved_choice: str | None = None):
    """`cfg` (a RunConfig) with --precision resolved for `version` ('pytorch' or 'huggingface', also
    the halves of --version both) and logged, by rank 0 under torchrun. A resumed run under auto keeps
    `saved_choice`, the precision of the run it continues."""
    if cfg.precision == "auto" and saved_choice in ("fp32", "bf16", "fp16"):
        choice = Choice(saved_choice, "auto: the choice of the run this one resumes")
    else:
        hooked = version == "huggingface" and cfg.track_internals  # its hooks refuse the packed step
        choice = choose(cfg.precision, device, cfg.hidden_size, cfg.fast and not hooked)
    if int(os.environ.get("RANK", "0")) == 0:
        logger.info("%s_version: precision %s (%s)", version, choice.name, choice.why)
    return dataclasses.replace(cfg, precision=choice.name)
