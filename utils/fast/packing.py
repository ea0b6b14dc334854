"""Compute on the real tokens only: a padded batch's rows packed together, for the training step.

A batch of B sentences is padded to its longest one; on the toy tasks' random batches about
38% of the (B, T) positions are <pad>. Everything in a Transformer layer except attention
itself works on each position alone (the Q/K/V/output projections, the FFN, LayerNorm,
dropout, the residual adds), so it can run on the (N, D) rows of the N real tokens and skip
the padding entirely. Attention mixes positions, so it puts its projected rows back on the
(B, T) grid (zeros where the padding was, never looked at: the padding masks hide those keys),
attends with the usual masks, and packs its output again.

The result equals the padded computation on every real position (tests/test_packing.py);
only the padding's rows, which nothing reads, are left out. Both versions use it when a
training step asks for the labelled logits only (`logits_mask`) and nothing is tracing;
the readable (B, T, D) path stays the one that traces, decodes and evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Packing:
    """Where the kept positions of a (B, T) grid are: `pack` takes their rows, `unpack` puts them back."""

    def __init__(self, keep: torch.Tensor) -> None:
        self.shape = keep.shape  # (B, T)
        self.index = keep.reshape(-1).nonzero().squeeze(1)  # (N,) row-major: sentence by sentence

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (N, D), the kept positions in row-major order (as `x[keep]`)."""
        return x.reshape(-1, x.size(-1)).index_select(0, self.index)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, T, D), zeros at the positions left out."""
        grid = rows.new_zeros(self.shape.numel(), rows.size(-1))
        return grid.index_copy(0, self.index, rows).view(*self.shape, rows.size(-1))


@dataclass
class Rows:
    """The packings of one batch: source positions (encoder) and target positions (decoder)."""

    src: Packing
    tgt: Packing

    @classmethod
    def of(cls, src_keep: torch.Tensor, tgt_keep: torch.Tensor) -> Rows:
        return cls(Packing(src_keep), Packing(tgt_keep))


def grid(x: torch.Tensor, packing: Packing | None) -> torch.Tensor:
    """`x` as (B, T, D): unpacked when it is packed rows (`packing` given), else unchanged."""
    return x if packing is None else packing.unpack(x)


def labelled_rows(rows: torch.Tensor, packing: Packing, logits_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's packed rows -> those of the positions `logits_mask` selects, as `x[logits_mask]`
    selects them from the padded (B, T, D) output. The packing must keep every such position."""
    return rows[logits_mask.reshape(-1).index_select(0, packing.index)]
