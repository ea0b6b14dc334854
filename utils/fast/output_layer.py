"""The output layer for inference, with its weight laid out once instead of on every call.

The output projection (D x V, 256 x 8000 in the default model) is the largest matmul of the
model, and while decoding it meets few rows: one per sentence per step. A BLAS call
re-lays-out ("packs") its weight into the blocks its kernel reads, on every call; with 64
rows that costs about as much as the multiplication itself. oneDNN, which ships inside
torch's CPU builds, can keep the packed copy (torch.compile's `freezing` does the same):
for 64 rows x 256 -> 8000 on 2 cores, 4.9 ms per call becomes 2.6 ms, and a greedy
decoding step spends a quarter of its time there (benchmarks/speed.py). The smaller
D x D and D x d_ff projections gain nothing from it, so only the output layer uses it.

`OutputLinear` is an nn.Linear: same parameters, same state dict, same training. Decoding
runs inside `with packed_output(lm_head):` (`lm_head.packed()`, or nothing for another kind
of layer), which packs the weight once on entry and drops the copy on exit; within it, calls
that want no gradient, on the CPU in float32 with oneDNN present, use the packed copy.
Scoped this way, the copy can never be stale: fused optimizers update a
weight in place without bumping its version counter, so a cache kept between calls could
not tell that the weight had changed. Results equal `F.linear`'s up to float rounding
(tests/test_fast_linear.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn


def _has_onednn_linear() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _has_onednn_linear()


class OutputLinear(nn.Linear):
    """nn.Linear that, inside `packed()`, multiplies by a copy of its weight packed once by oneDNN."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: torch.Tensor | None = None  # the packed copy, while inside `packed()`

    @contextmanager
    def packed(self) -> Iterator[None]:
        """Pack the weight for the calls inside; the weight must not change until the block ends."""
        w = self.weight
        usable = (
            ONEDNN and torch.backends.mkldnn.enabled and w.device.type == "cpu" and w.dtype == torch.float32
        )
        if self._packed is not None or not usable:
            yield  # nested, or nothing to gain: plain F.linear
            return
        try:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach())
        except RuntimeError:  # a oneDNN that cannot pack this weight: F.linear as ever
            self._packed = None
        try:
            yield
        finally:
            self._packed = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed  # read once: another thread may leave `packed()` meanwhile
        if packed is None or not self._may_use_packed(x):
            return F.linear(x, self.weight, self.bias)
        bias = self.bias.detach() if self.bias is not None else None
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    def _may_use_packed(self, x: torch.Tensor) -> bool:
        """Only where F.linear would give the same: no gradient wanted, float32 on the CPU, no
        autocast (it would change the output's dtype), not being traced by torch.compile (Inductor
        cannot lower the packed op)."""
        wants_grad = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        return not (
            wants_grad
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()
        )

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_packed"] = None  # an opaque oneDNN tensor: neither copied nor pickled
        return state


def packed_output(layer: nn.Module) -> AbstractContextManager:
    """`layer.packed()` for an OutputLinear; for any other output layer (a plain nn.Linear put
    in its place, say by transformers' resize_token_embeddings) a block that changes nothing."""
    return layer.packed() if isinstance(layer, OutputLinear) else nullcontext()
