"""BERT's masked-language-model data (`--task mlm --data_file PATH`): windows of text with tokens hidden.

Devlin et al. (2019), section 3.1: 15% of the tokens are chosen; of those, 80% are replaced by
[MASK], 10% by a random token and 10% are left unchanged, and the model must say what each chosen
token was. The random and unchanged ones keep it from learning that only [MASK] needs guessing:
it has to build a good vector for every token. Padding and the specials ([CLS], [SEP]) are never
chosen, and the loss counts the chosen positions only.

A batch has the toolkit's pair layout (utils.data.tasks), with the encoder's input as the source:
    src      (B, S)  [CLS] text [SEP], some tokens replaced as above
    tgt_in   (B, 0)  nothing: an encoder-only model has no target side
    tgt_out  (B, S)  the original token where one was chosen, PAD elsewhere (no label there)

The corpus is utils.data.lm's (one stream, the first 90% trains, the last 10% validates); training
windows are drawn at random as a language model's are, validation windows are cut in order and
masked with a fixed seed, so every evaluation scores the same hidden tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from utils.data.lm import LMBatches
from utils.data.tokenizer import PAD_ID

Batch = dict[str, torch.Tensor]
MASK_RATE, AS_MASK, AS_RANDOM = 0.15, 0.8, 0.1  # the paper's 15%; 80% [MASK], 10% random, 10% unchanged


@dataclass
class MaskingCounts:
    """What the masking did, added up over every batch it made: the masking-distribution figure's data."""

    maskable: int = 0  # tokens that could be chosen (not padding, not a special)
    chosen: int = 0
    as_mask: int = 0
    as_random: int = 0
    unchanged: int = 0
    per_position: list[int] = field(default_factory=list)  # chosen count at each window position

    def add(self, maskable: torch.Tensor, chosen: torch.Tensor, as_mask: torch.Tensor, as_random) -> None:
        self.maskable += int(maskable.sum())
        self.chosen += int(chosen.sum())
        self.as_mask += int(as_mask.sum())
        self.as_random += int(as_random.sum())
        self.unchanged = self.chosen - self.as_mask - self.as_random
        column = chosen.sum(0).tolist()
        self.per_position += [0] * (len(column) - len(self.per_position))
        for i, count in enumerate(column):
            self.per_position[i] += count

    def shares(self) -> dict[str, float]:
        """The measured rates: chosen of maskable, then [MASK] / random / unchanged of chosen."""
        chosen = max(self.chosen, 1)
        return {"chosen": self.chosen / max(self.maskable, 1), "as_mask": self.as_mask / chosen,
                "as_random": self.as_random / chosen, "unchanged": self.unchanged / chosen}  # fmt: skip

    def to_dict(self) -> dict:
        return {**self.__dict__, "shares": self.shares()}


def mask_tokens(ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, first_ordinary: int, vocab_size: int,
                generator: torch.Generator, counts: MaskingCounts | None = None,
                rate: float = MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, S) ids -> (inputs, labels): BERT's masking of the `maskable` positions.

    Random replacements are drawn from the ordinary tokens (ids `first_ordinary`..vocab_size - 1);
    `labels` holds the original id where a token was chosen and PAD elsewhere.
    """
    draw = torch.rand(ids.shape, generator=generator)
    chosen = maskable & (draw < rate)
    kind = torch.rand(ids.shape, generator=generator)  # what a chosen token becomes
    as_mask = chosen & (kind < AS_MASK)
    as_random = chosen & (kind >= AS_MASK) & (kind < AS_MASK + AS_RANDOM)
    random_ids = torch.randint(first_ordinary, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(as_mask, mask_id, torch.where(as_random, random_ids, ids))
    labels = torch.where(chosen, ids, PAD_ID)
    if counts is not None:
        counts.add(maskable, chosen, as_mask, as_random)
    return inputs, labels


class Masker:
    """Frames windows of text as BERT inputs ([CLS] ... [SEP]) and masks them."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.first_ordinary = len(tokenizer.specials)  # the characters come after the specials

    def __call__(self, windows: torch.Tensor, generator: torch.Generator, counts=None) -> Batch:
        """(B, W) windows (a shorter one padded at its end) -> a masked batch of (B, W + 2) inputs."""
        tok = self.tokenizer
        B, W = windows.shape
        ids = torch.full((B, W + 2), PAD_ID, dtype=torch.long)
        ids[:, 0], ids[:, 1 : W + 1] = tok.cls_id, windows
        ids[torch.arange(B), (windows != PAD_ID).sum(1) + 1] = tok.sep_id  # right after each row's text
        maskable = ids >= self.first_ordinary
        inputs, labels = mask_tokens(
            ids, maskable, tok.mask_id, self.first_ordinary, tok.vocab_size, generator, counts
        )
        return {"src": inputs, "tgt_in": ids.new_empty(B, 0), "tgt_out": labels}


class MLMBatches(LMBatches):
    """`steps` masked batches of random windows of `window` tokens, as LMBatches draws them.

    The masks come from a generator seeded by (seed, epoch), so they too depend on where in the run a
    batch is, not on what ran before: a resumed run masks the batches it skips over as the first run
    did. Under torchrun the global batch is masked and each process takes its rows, so N processes
    with batch B train on what one process with N x B does. `counts` adds up what the masking did on
    every (global) batch trained on.
    """

    def __init__(self, ids, tokenizer, batch_size: int, window: int, steps: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        super().__init__(ids, batch_size, window - 1, steps, seed, rank, world_size)  # (window) tokens a row
        self.masker = Masker(tokenizer)
        self.counts = MaskingCounts()

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed((self.seed + self.epoch) * 1000 + 7919)
        for windows in self.global_windows():
            batch = self.masker(windows, generator, self.counts)
            yield {key: value[self.mine] for key, value in batch.items()}


def mlm_validation_batches(ids: torch.Tensor, tokenizer, window: int, batch_size: int, seed: int = 0):
    """The validation split in windows that do not overlap, masked the same way at every evaluation."""
    masker, generator = Masker(tokenizer), torch.Generator().manual_seed(seed + 104729)
    for first in range(0, len(ids), batch_size * window):
        starts = range(first, min(first + batch_size * window, len(ids)), window)
        windows = torch.full((len(starts), window), PAD_ID, dtype=torch.long)
        for row, start in enumerate(starts):
            piece = ids[start : start + window]
            windows[row, : len(piece)] = piece
        yield masker(windows, generator)
