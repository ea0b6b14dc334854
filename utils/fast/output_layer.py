"""The output layer for inference, with its weight laid out once instead of on every call.

The output projection (D x V, 256 x 8000 in the default model) is the largest matmul of the
model, and while decoding it meets few rows: one per sentence per step. A BLAS call
re-lays-out ("packs") its weight into the blocks its kernel reads, on every call; with 64
rows that costs about as much as the multiplication itself. oneDNN, which ships inside
torch's CPU builds, can keep the packed copy (torch.compile's `freezing` does the same):
for 64 rows x 256 -> 8000 on 2 cores, 4.9 ms per call becomes 2.6 ms, and a greedy
decoding step spends a quarter of its time there (benchmarks/speed_pieces.py). The smaller
D x D and D x d_ff projections gain nothing from it, so only the output layer uses it.

Seam: a module swap. `swap_output_layer(model)` replaces the model's `lm_head` nn.Linear with
an `OutputLinear` holding the same Parameter objects (tied weights stay tied; the state dict is
unchanged), so the readable decoding code and transformers' `generate` need no change.

When the copy is made and dropped: it is made on the first call that wants no gradient, on
the CPU in float32, in eval mode, and kept while the weight is the same tensor (the copy holds
it, so its memory cannot be reused by another), with the same version counter, and no
optimizer has taken a step since. Fused optimizers update a weight in place without bumping
its version counter, hence the step count (torch's global optimizer-step hook) and the drop on
`train()`; a weight changed otherwise (`load_state_dict`, checkpoint averaging, `copy_`) bumps
the version. Writes through `.data` bump nothing and are not seen: change weights with
`torch.no_grad()` and in-place ops instead. Results equal `F.linear`'s up to float rounding
(tests/fast/test_fast_linear.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


def _has_onednn_linear() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _has_onednn_linear()
_optimizer_steps = [0]  # every optimizer step of the process, counted by torch's global hook


def _count_step(optimizer, args, kwargs) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)


class OutputLinear(nn.Linear):
    """nn.Linear that, for inference on the CPU, multiplies by a copy of its weight packed once by oneDNN."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: tuple | None = None  # (copy, (the weight, its version, optimizer steps))

    @classmethod
    def like(cls, layer: nn.Linear) -> OutputLinear:
        """An OutputLinear sharing `layer`'s Parameter objects (no copy: a tie stays a tie)."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight = layer.weight
        new.bias = layer.bias
        new.train(layer.training)
        return new

    def train(self, mode: bool = True) -> OutputLinear:
        self._packed = None  # training will change the weight, maybe without a version bump
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_weight() if self._may_use_packed(x) else None
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        bias = self.bias.detach() if self.bias is not None else None
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    def _packed_weight(self) -> torch.Tensor | None:
        """The packed copy of the weight as it is now (made again if the weight changed)."""
        w = self.weight
        key = (w._version, _optimizer_steps[0])
        if self._packed is None or self._packed[1][0] is not w or self._packed[1][1:] != key:
            try:
                self._packed = (torch.ops.mkldnn._reorder_linear_weight(w.detach()), (w, *key))
            except RuntimeError:  # a oneDNN that cannot pack this weight: F.linear as ever
                return None
        return self._packed[0]

    def _may_use_packed(self, x: torch.Tensor) -> bool:
        """Only where F.linear would give the same: inference (eval mode, no gradient wanted),
        float32 on the CPU, no autocast (it would change the output's dtype), not being traced by
        torch.compile (Inductor cannot lower the packed op)."""
        w = self.weight
        wants_grad = torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)
        return not (
            not ONEDNN
            or not torch.backends.mkldnn.enabled
            or self.training
            or wants_grad
            or w.device.type != "cpu"
            or w.dtype != torch.float32
            or w.is_inference()  # made under inference_mode: no version counter to follow
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()
        )

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_packed"] = None  # an opaque oneDNN tensor: neither copied nor pickled
        return state


def swap_output_layer(model: nn.Module) -> bool:
    """Make `model.lm_head` (an nn.Linear) an OutputLinear with the same parameters; False if it has none."""
    layer = getattr(model, "lm_head", None)
    if type(layer) is not nn.Linear:
        return isinstance(layer, OutputLinear)
    model.lm_head = OutputLinear.like(layer)
    return True
