"""A KV cache that appends into a growing buffer instead of concatenating the whole past each step.

The readable `pytorch_version.attention.KVCache.append` does `torch.cat([past, new])`: every
decoding step copies all the keys and values so far, O(T) work per step for one new position.
Here appended positions go into a buffer with room to spare, doubled when full, so a step
writes its own position only; `store` holds views of the filled part, (B, H, t, d_k). Views
handed out stay as they were: later steps write past their end, and a larger buffer or a
reorder makes new tensors. Measured on the benchmark model (64 sources, 32 new tokens):
496 vs 513 ms a greedy decode (benchmarks/speed_pieces.py has the current figure).

Seam: `Transformer.cache_class`, the class `new_cache()` builds; `utils.fast.plug_in` sets it.
Same interface as the readable cache (`store`, `append`, `reorder`, `len`), so it does not
import pytorch_version; tests/fast/test_fast_pieces.py holds the two equal step by step.
"""

from __future__ import annotations

import torch


class GrowingKVCache:
    """Drop-in twin of pytorch_version.attention.KVCache with amortised O(1) appends."""

    def __init__(self) -> None:
        self.store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._room: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the buffers behind `append`
        self.padding: torch.Tensor | None = None  # (B, t) real positions, as the readable cache has

    def append(self, key: str, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, H, T, d_k) new positions under `key`; returns all positions so far."""
        past = self.store.get(key)
        t0 = past[0].size(2) if past is not None else 0
        t1 = t0 + k.size(2)
        room = self._room.get(key)
        fits = room is not None and room[0].size(2) >= t1
        if not (fits and (past is None or past[0].data_ptr() == room[0].data_ptr())):
            # no buffer yet, a full one, or `store` was set from outside: a new one, the past copied in
            capacity = max(16, 2 * t1)
            room = self._room[key] = tuple(
                x.new_empty(x.size(0), x.size(1), capacity, x.size(3)) for x in (k, v)
            )
            if past is not None:
                room[0][:, :, :t0], room[1][:, :, :t0] = past
        room[0][:, :, t0:t1] = k
        room[1][:, :, t0:t1] = v
        self.store[key] = (room[0][:, :, :t1], room[1][:, :, :t1])
        return self.store[key]

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i of every entry becomes row index[i] of before."""
        for key, (k, v) in self.store.items():
            room = self._room.get(key)
            if room is not None and k.data_ptr() == room[0].data_ptr():  # views of `append`'s buffer
                room = self._room[key] = tuple(x.index_select(0, index) for x in room)
                self.store[key] = (room[0][:, :, : k.size(2)], room[1][:, :, : k.size(2)])
            else:
                self.store[key] = (k.index_select(0, index), v.index_select(0, index))
        if self.padding is not None:
            self.padding = self.padding.index_select(0, index)

    def __len__(self) -> int:
        """Number of decoded positions held by the self-attention entries."""
        lengths = [k.size(2) for key, (k, _) in self.store.items() if key.endswith("self")]
        return lengths[0] if lengths else 0
