"""The data of a language-model run (`--task lm --data_file PATH`): one long text, its ids, batches.

A decoder-only model (GPT) learns p(next token | the tokens before it) from a single stream of
text. The stream is cut once, into the first 90% of its characters for training and the last
10% for validation (or a second file validates), and tokenised with characters or byte-level BPE.

    training    random windows of `context_length` + 1 tokens, as nanoGPT's get_batch draws them
    validation  the whole validation split, cut into windows that do not overlap

A batch has the toolkit's pair layout, so one training step serves both model families:
    src      (B, 0)  no prompt: a language model has no source sentence
    tgt_in   (B, T)  x = ids[i : i + T]             what the model reads
    tgt_out  (B, T)  y = ids[i + 1 : i + T + 1]     the next token at each position of x

Text is read as it is (a BOM is dropped), except that Windows line ends "\\r\\n" become "\\n":
the same play saved on Windows and on Linux then gives the same ids and the same counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from utils.data.corpus import read_text
from utils.data.tokenizer import PAD_ID, SPECIALS, UNK_ID, CharTokenizer
from utils.runtime.config import UserError

logger = logging.getLogger(__name__)

TOKENIZERS = ("char", "bpe")
Batch = dict[str, torch.Tensor]  # {"src", "tgt_in", "tgt_out"}, as utils.data.tasks.collate makes
TRAIN_FRACTION = 0.9  # nanoGPT's split of Shakespeare: the first 90% trains, the last 10% validates


@dataclass
class TextCorpus:
    """One language-model corpus, tokenised: the two splits' ids and what they were made from."""

    train_ids: torch.Tensor  # (N_train,) long
    val_ids: torch.Tensor  # (N_val,) long
    tokenizer: object  # CharTokenizer, or a byte-level utils.data.bpe.BPETokenizer
    train_chars: int  # characters of each split: the denominator of bits per character
    val_chars: int
    data_file: str
    val_file: str = ""  # "" when the validation split is the end of data_file
    val_unknown: int = 0  # validation characters never seen in training (they read as <unk>)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def _read(path: str) -> str:
    text = read_text(path, expected="text to train a language model on")
    return text.replace("\r\n", "\n")


def _tokenizer(kind: str, train_text: str, vocab_size: int, specials):
    if kind == "char":  # the alphabet is the training text's own characters
        return CharTokenizer(train_text, specials)
    from utils.data.bpe import BPETokenizer  # needs `tokenizers`; only here

    return BPETokenizer.train([train_text], vocab_size, byte_level=True)  # keeps every newline


def load_text_corpus(
    data_file: str,
    val_file: str = "",
    tokenizer: str = "char",
    vocab_size: int = 8000,
    context_length: int = 128,
    specials: tuple[str, ...] = SPECIALS,
) -> TextCorpus:
    """Read, split and tokenise a UTF-8 text file for a language model.

    Args:
        data_file: the text; its first 90% of characters train and its last 10% validate, unless
            `val_file` is given: then all of `data_file` trains and all of `val_file` validates.
        tokenizer: "char" (one id per character of the training text, plus the four specials)
            or "bpe" (a byte-level BPE vocabulary of `vocab_size` tokens learnt from the training
            text only, so nothing about the validation text leaks into it).
        specials: a character vocabulary's specials (BERT's masked LM adds [CLS], [SEP], [MASK]).
        context_length: the window the model reads; the training split must hold one window and
            its next token.

    Every problem is a one-line UserError naming the file: missing, a folder, empty (or only
    whitespace), not UTF-8 (the byte and where), a split too short, an unknown tokenizer.
    """
    if tokenizer not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {tokenizer!r} for a language model; expected one of: char, bpe")
    text = _read(data_file)
    if val_file:
        train_text, val_text = text, _read(val_file)
    else:
        cut = int(len(text) * TRAIN_FRACTION)
        train_text, val_text = text[:cut], text[cut:]
    tok = _tokenizer(tokenizer, train_text, vocab_size, specials)
    train_ids = torch.tensor(tok.encode(train_text, add_eos=False), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text, add_eos=False), dtype=torch.long)

    if len(train_ids) < context_length + 1:
        raise UserError(
            f"{data_file}: the training split has {len(train_ids)} tokens, but a context of "
            f"{context_length} needs at least {context_length + 1} (the window and its next token); "
            "use a longer file or a shorter context"
        )
    val_name = val_file or f"{data_file} (its last {1 - TRAIN_FRACTION:.0%})"
    if len(val_ids) < 2:
        raise UserError(
            f"{val_name}: the validation split has {len(val_ids)} token(s), but at least 2 are needed "
            "(one to read and one to predict)"
        )
    unknown = int((val_ids == UNK_ID).sum()) if tokenizer == "char" else 0  # byte-level BPE has none
    if unknown:
        logger.warning("%s: %d validation characters never seen in training read as <unk>", val_name, unknown)
    return TextCorpus(train_ids, val_ids, tok, len(train_text), len(val_text), data_file, val_file, unknown)


# --- what a loss means --------------------------------------------------------------------------


def bits_per_character(loss_nats_per_token: float, tokens: int, chars: int) -> float:
    """The mean cross-entropy in bits per character of text: comparable across tokenizers.

    A loss in nats per token depends on how long a token is; multiplied by the tokens it covers
    and divided by the characters they spell, it is nats per character, and / ln 2 turns nats into
    bits. At character level tokens == chars. For the validation split, the tokens are the ones
    predicted (len(val_ids) - 1: the first is only read) and chars is `val_chars` (one character
    more, which over a split of thousands makes no difference worth a second count).
    """
    return loss_nats_per_token * tokens / chars / math.log(2)


def perplexity(loss_nats_per_token: float) -> float:
    """exp(loss): the number of equally likely tokens the model is, on average, choosing among.

    A model that knows nothing has the perplexity of the vocabulary size; a perfect one has 1.
    """
    return math.exp(loss_nats_per_token)


def unigram_entropy(ids: torch.Tensor) -> float:
    """The entropy, in nats per token, of the tokens' frequencies: -sum p(t) ln p(t).

    It is the loss of the best model that ignores context (one that predicts each token with its
    frequency in `ids`); a language model that has learnt anything from context goes below it.
    """
    counts = torch.bincount(ids.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


# --- batches ------------------------------------------------------------------------------------


def _pair_batch(windows: torch.Tensor) -> Batch:
    """(B, T + 1) windows of ids -> the pair layout: the inputs and, shifted by one, the targets."""
    empty = windows.new_empty(windows.shape[0], 0)  # (B, 0): no source
    return {"src": empty, "tgt_in": windows[:, :-1], "tgt_out": windows[:, 1:]}


class LMBatches:
    """`steps` batches of random windows from `ids`, the same ones for the same (seed, epoch).

    As nanoGPT's get_batch: each window starts at a position drawn uniformly from the first
    len(ids) - context_length, so every window and its next token lie inside the text. An epoch
    is `steps` optimizer steps, not a pass over the text; set `steps` for a shorter last epoch.

    Batch i of an epoch comes from a generator seeded with seed + epoch and drawn i times before,
    so it depends on (seed, epoch, i) only: a resumed run that skips the first k batches of an
    epoch (itertools.islice) then sees the very batches the first run would have, whatever `steps`.
    Under torchrun every process draws the same world_size x batch_size starts and takes the
    batch_size at its rank: N processes with batch B see the windows one process with N x B sees.

    It stands where a DataLoader stands: `len()` is the number of batches, and
    utils.runtime.distributed.set_epoch(batches, epoch) reaches `set_epoch` through `sampler`.
    """

    batch_sampler = None  # read by distributed.set_epoch, as a DataLoader's

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        context_length: int,
        steps: int,
        seed: int = 0,
        rank: int = 0,  # this process's place under torchrun, and how many there are
        world_size: int = 1,
    ) -> None:
        assert len(ids) > context_length, "load_text_corpus checks that the text holds one window"
        self.ids, self.batch_size, self.context_length = ids, batch_size, context_length
        self.steps, self.seed, self.epoch = steps, seed, 0
        self.rank, self.world_size = rank, world_size
        # what a resumed run's Progress saves of a loader; the windows themselves come from (seed, epoch)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def sampler(self) -> LMBatches:
        return self  # it is its own sampler: distributed.set_epoch(loader, epoch) calls our set_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    @property
    def mine(self) -> slice:
        """This process's rows of a global batch."""
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def global_windows(self) -> Iterator[torch.Tensor]:
        """The global batches' windows, (world_size x B, T + 1) each: what one process with N x B draws."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        offsets = torch.arange(self.context_length + 1)  # (T + 1,)
        for _ in range(self.steps):
            everyone = (self.world_size * self.batch_size,)  # the global batch's starts
            starts = torch.randint(len(self.ids) - self.context_length, everyone, generator=generator)
            yield self.ids[starts[:, None] + offsets]

    def __iter__(self) -> Iterator[Batch]:
        for windows in self.global_windows():
            yield _pair_batch(windows[self.mine])  # (B, T + 1)


def validation_batches(ids: torch.Tensor, context_length: int, batch_size: int) -> Iterator[Batch]:
    """The whole validation split in windows that do not overlap, `batch_size` windows a batch.

    Window k reads ids[kT : kT + T] and predicts ids[kT + 1 : kT + T + 1], so every token after
    the first is predicted exactly once. The last window may be shorter: its tail is padded with
    PAD (id 0, never a token of the text) in tgt_in and tgt_out, and a loss that ignores PAD
    targets skips it. The first targets of each window are predicted from little context (the
    first from one token), where a sliding window would give each a full one, so this loss is a
    little above what the model can do with `context_length` tokens.
    """
    predicted = len(ids) - 1
    for first in range(0, predicted, batch_size * context_length):
        starts = range(first, min(first + batch_size * context_length, predicted), context_length)
        windows = torch.full((len(starts), context_length + 1), PAD_ID, dtype=torch.long)  # (B, T + 1)
        for row, start in enumerate(starts):
            piece = ids[start : start + context_length + 1]
            windows[row, : len(piece)] = piece
        yield _pair_batch(windows)
