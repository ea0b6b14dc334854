"""Every speed-up of the toolkit, each a named piece plugged in at a seam the readable code names once.

The model files (pytorch_version/attention.py, layers.py, model.py and huggingface_version's)
hold the paper's math only; what makes training and decoding fast on a CPU lives here, and
`SpeedUps` chooses it in one place. `--no-fast` turns every piece off: the run then trains
and decodes on the plain readable path (slower, same results up to float rounding and the
dropout masks' random numbers).

    piece                seam                                           module
    packed_rows          the module a trainer calls for a step's        packing.py (a GPT:
                         labelled logits (a twin over the same modules) decoder_only.py, BERT's
                                                                        masked LM: encoder_only.py)
    fast_dropout         module swap nn.Dropout -> Dropout              dropout.py
    packed_output_layer  module swap lm_head -> OutputLinear            output_layer.py
    written_down_loss    the loss function a trainer calls              loss.py
    growing_kv_cache     Transformer.cache_class (pytorch_version)      kv_cache.py
    fused_adam           the optimizer a trainer builds                 torch.optim.Adam(fused=True)
    float32_attention    an entry of pytorch_version.attention's        attention.py (the packed
                         ATTENTION_FUNCTIONS (--bf16 on a CPU: the      steps always use it)
                         attention in float32)

Each module's docstring gives its reason and measurement; tests/fast/test_fast_pieces.py holds each
equal to the readable computation; benchmarks/speed_pieces.py prints what each buys, one row each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from utils.fast import loss as fast_loss
from utils.fast.attention import FLOAT32_UNDER_BF16
from utils.fast.dropout import swap_dropout
from utils.fast.kv_cache import GrowingKVCache
from utils.fast.output_layer import swap_output_layer
from utils.fast.packing import LabelledLogits, why_not_packed
from utils.training import recipe


@dataclass(frozen=True)
class SpeedUps:
    """Which speed-ups a run uses. All of them by default; `SpeedUps.none()` is the readable path."""

    packed_rows: bool = True  # training steps compute on the real tokens' rows only (38% are padding)
    fast_dropout: bool = True  # one 64-bit random draw per four dropout-mask elements
    packed_output_layer: bool = True  # decoding: the output layer's weight laid out once by oneDNN
    written_down_loss: bool = True  # the smoothed loss's gradient p - q, not autograd's several passes
    growing_kv_cache: bool = True  # decoding appends keys/values into a buffer, no torch.cat per step
    fused_adam: bool = True  # one kernel updates every parameter instead of ~10 small ops each
    float32_attention: bool = (
        True  # --bf16 on a CPU: the fused attention in float32 (its bf16 backward is slow)
    )

    @classmethod
    def none(cls) -> SpeedUps:
        return cls(**dict.fromkeys(cls.names(), False))

    @classmethod
    def only(cls, name: str) -> SpeedUps:
        """Just one piece on (benchmarks/speed_pieces.py measures each alone)."""
        return dataclasses.replace(cls.none(), **{name: True})

    @classmethod
    def from_flag(cls, fast: bool) -> SpeedUps:
        """--fast (the default) or --no-fast."""
        return cls() if fast else cls.none()

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def plug_in(self, model: nn.Module) -> nn.Module:
        """The module swaps of this choice, applied to `model` in place (its state dict is unchanged)."""
        if self.fast_dropout:
            swap_dropout(model)
        if self.packed_output_layer:
            swap_output_layer(model)
        if self.growing_kv_cache and hasattr(model, "cache_class"):
            model.cache_class = GrowingKVCache
        if self.float32_attention:
            for module in model.modules():
                if hasattr(module, "attention_function"):  # pytorch_version's MultiHeadAttention
                    module.attention_function = FLOAT32_UNDER_BF16
        return model

    def labelled_logits(self, model: nn.Module, pad_id: int) -> LabelledLogits:
        """The module a training step calls for its labelled logits (packed or readable)."""
        return LabelledLogits(model, pad_id, packed=self.packed_rows)

    def loss_sum(self) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
        """(N, V) labelled logits, (N,) targets, smoothing -> the summed smoothed cross-entropy."""
        return fast_loss.labelled_loss_sum if self.written_down_loss else recipe.labelled_loss_sum


__all__ = ["LabelledLogits", "SpeedUps", "why_not_packed"]
