"""Batches by token count: sentences of similar length together, so little compute goes to padding.

A batch of B sentences is padded to its longest one, so random batches of real text are
mostly padding when one long sentence sits among short ones. `TokenBatchSampler` groups
examples by length and fills each batch up to `max_tokens` padded tokens (as fairseq's
--max-tokens and tensor2tensor's bucketing do): short sentences come many to a batch, long
ones few, and every batch costs about the same.

The padding ratio (padded positions / all positions of the source and target tensors) says
how much of the compute is wasted; `padding_ratio` computes it for any list of batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def padded_size(src_lengths: Sequence[int], tgt_lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Positions of a batch's larger tensor: sentences x the longest source or target."""
    return len(batch) * max(max(src_lengths[i], tgt_lengths[i]) for i in batch)


def padding_ratio(src_lengths: Sequence[int], tgt_lengths: Sequence[int], batches) -> float:
    """Share of the positions in the padded source and target tensors that hold <pad>."""
    real = padded = 0
    for batch in batches:
        for lengths in (src_lengths, tgt_lengths):
            longest = max(lengths[i] for i in batch)
            real += sum(lengths[i] for i in batch)
            padded += longest * len(batch)
    return 1.0 - real / max(padded, 1)


class TokenBatchSampler(Sampler[list[int]]):
    """Yields lists of example indices whose padded size stays within `max_tokens`.

    Each pass (epoch):
      1. examples are put in buckets of equal length (the longer of source and target),
         in a random order inside each bucket when shuffling;
      2. going from short to long, a batch is closed when one more example would take it
         over `max_tokens` padded tokens (a single longer example gets a batch of its own);
      3. the batches are shuffled, so the model does not see lengths in increasing order.
    The batch boundaries depend only on the lengths, so every epoch has the same number of
    batches (`len`), while which sentences share a batch changes from epoch to epoch.
    Without shuffling (evaluation) the order is fixed: sorted by length, ties by index.

    The random draws come from `generator`, as torch's RandomSampler does, so one seeded
    generator fixes the order of every epoch.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths for {len(tgt_lengths)} target lengths")
        self.src_lengths, self.tgt_lengths = list(src_lengths), list(tgt_lengths)
        self.keys = torch.tensor([max(s, t) for s, t in zip(self.src_lengths, self.tgt_lengths)])
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.generator = generator
        self.sizes = self._batch_sizes(sorted(self.keys.tolist()))

    def _batch_sizes(self, sorted_keys: list[int]) -> list[int]:
        """How many examples go into each batch, going through the lengths in increasing order."""
        sizes, count, longest = [], 0, 0
        for key in sorted_keys:
            if count and (count + 1) * max(longest, key) > self.max_tokens:
                sizes.append(count)
                count, longest = 0, 0
            count, longest = count + 1, max(longest, key)
        return [*sizes, count] if count else sizes

    def batches(self, generator: torch.Generator | None = None) -> list[list[int]]:
        """One epoch's batches; draws from `generator` when shuffling."""
        if self.shuffle:
            # a random permutation, then a stable sort by length: random order within each length
            perm = torch.randperm(len(self.keys), generator=generator)
            order = perm[torch.sort(self.keys[perm], stable=True).indices]
        else:
            order = torch.sort(self.keys, stable=True).indices
        batches = list(torch.split(order, self.sizes))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.generator)

    def __len__(self) -> int:
        return len(self.sizes)

    def preview(self) -> list[list[int]]:
        """The batches the next pass will yield, without drawing from the generator."""
        if self.generator is None or not self.shuffle:
            return self.batches(torch.Generator().manual_seed(0) if self.shuffle else None)
        copy = torch.Generator()
        copy.set_state(self.generator.get_state())
        return self.batches(copy)

    def padding_ratio(self) -> float:
        """The padding ratio of the next pass (it barely changes from pass to pass)."""
        return padding_ratio(self.src_lengths, self.tgt_lengths, self.preview())
