"""The language-model data: reading and splitting a text, its tokenizers, batches and metrics."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch

from tests.conftest import ROOT
from utils.data.lm import (
    LMBatches,
    bits_per_character,
    load_text_corpus,
    perplexity,
    unigram_entropy,
    validation_batches,
)
from utils.data.tokenizer import PAD_ID, UNK_ID, CharTokenizer, tokenizer_from_dict
from utils.runtime.config import UserError
from utils.runtime.distributed import set_epoch

SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="no ../shared/data/tinyshakespeare")

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 3


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shakespeare():
    return load_text_corpus(str(SHAKESPEARE)) if SHAKESPEARE.is_file() else None


# --- reading and splitting ----------------------------------------------------------------------


@needs_shakespeare
def test_tinyshakespeare_splits_like_nanogpt(shakespeare):
    assert (shakespeare.train_chars, shakespeare.val_chars) == (1_003_854, 111_540)
    assert len(shakespeare.train_ids) == 1_003_854 and len(shakespeare.val_ids) == 111_540
    assert shakespeare.vocab_size == 65 + 4 and shakespeare.val_unknown == 0
    assert shakespeare.train_ids.dtype == torch.long and shakespeare.train_ids.dim() == 1
    text = SHAKESPEARE.read_text(encoding="utf-8")
    assert shakespeare.tokenizer.decode(shakespeare.val_ids) == text[1_003_854:]  # every newline kept


@needs_shakespeare
def test_byte_level_bpe_keeps_shakespeare_exactly(tmp_path):
    text = SHAKESPEARE.read_text(encoding="utf-8")[:50_000]  # a slice: learning merges takes seconds
    (tmp_path / "slice.txt").write_text(text, encoding="utf-8")
    corpus = load_text_corpus(str(tmp_path / "slice.txt"), tokenizer="bpe", vocab_size=400, context_length=8)
    tok, cut = corpus.tokenizer, corpus.train_chars
    assert tok.vocab_size == 400 and len(corpus.train_ids) < cut  # subwords: fewer tokens than characters
    assert tok.decode(corpus.train_ids) == text[:cut] and tok.decode(corpus.val_ids) == text[cut:]
    for line in text.splitlines(keepends=True)[:200] + ["\n\n", "  two spaces\n\n\nthree newlines"]:
        assert tok.decode(tok.encode(line, add_eos=False)) == line
    restored = tokenizer_from_dict(tok.to_dict())  # what a checkpoint rebuilds keeps newlines too
    assert restored.decode(restored.encode(text, add_eos=False)) == text


def test_char_round_trip_split_and_counts(text_file):
    corpus = load_text_corpus(str(text_file), context_length=8)
    cut = int(len(TEXT) * 0.9)
    assert (corpus.train_chars, corpus.val_chars) == (cut, len(TEXT) - cut)
    assert isinstance(corpus.tokenizer, CharTokenizer)
    assert corpus.tokenizer.alphabet == "".join(sorted(set(TEXT[:cut])))
    assert corpus.tokenizer.decode(corpus.train_ids) + corpus.tokenizer.decode(corpus.val_ids) == TEXT
    assert (corpus.data_file, corpus.val_file) == (str(text_file), "")


def test_bom_dropped_and_crlf_becomes_lf(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes("\ufeff".encode() + TEXT.replace("\n", "\r\n").encode("utf-8"))
    corpus = load_text_corpus(str(path), context_length=8)
    assert corpus.train_chars + corpus.val_chars == len(TEXT)
    assert "\r" not in corpus.tokenizer.alphabet and "\ufeff" not in corpus.tokenizer.alphabet


def test_val_file_validates_and_unseen_characters_are_counted(text_file, tmp_path, caplog):
    val = tmp_path / "val.txt"
    val.write_text("Zounds! to be\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="utils.data.lm"):
        corpus = load_text_corpus(str(text_file), val_file=str(val), context_length=8)
    assert (corpus.train_chars, corpus.val_chars) == (len(TEXT), 14)
    assert corpus.val_file == str(val) and corpus.tokenizer.alphabet == "".join(sorted(set(TEXT)))
    assert corpus.val_unknown == 2 == int((corpus.val_ids == UNK_ID).sum())  # "Z" and "!"
    assert "2 validation characters never seen in training" in caplog.text


def one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as err:
        load_text_corpus(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_bad_input_is_a_one_line_user_error(tmp_path, text_file):
    missing = tmp_path / "nope.txt"
    assert str(missing) in one_line_error("not found", str(missing))
    assert "is a folder" in one_line_error("not found", str(tmp_path))
    (tmp_path / "blank.txt").write_text(" \n\t\n", encoding="utf-8")
    assert "blank.txt" in one_line_error("is empty", str(tmp_path / "blank.txt"))
    (tmp_path / "empty.txt").write_bytes(b"")
    one_line_error("is empty", str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("ab\ncaf\xe9".encode("latin-1"))
    message = one_line_error(r"not valid UTF-8 \(byte 0xe9 at byte column 4\)", str(tmp_path / "latin1.txt"))
    assert "latin1.txt line 2" in message
    message = one_line_error("training split has", str(text_file), context_length=500)
    assert f"has {int(len(TEXT) * 0.9)} tokens" in message and "at least 501" in message
    (tmp_path / "one.txt").write_text("x", encoding="utf-8")
    assert "one.txt" in one_line_error(
        "validation split has 1 token", str(text_file), str(tmp_path / "one.txt")
    )
    (tmp_path / "ten.txt").write_text("abcdefghij", encoding="utf-8")  # 9 characters train, 1 validates
    message = one_line_error("validation split has 1 token", str(tmp_path / "ten.txt"), context_length=8)
    assert "ten.txt (its last 10%)" in message
    one_line_error("unknown tokenizer 'words'", str(text_file), tokenizer="words")
    one_line_error("at least 260 tokens", str(text_file), tokenizer="bpe", vocab_size=100)


# --- metrics ------------------------------------------------------------------------------------


def test_bits_per_character_and_perplexity():
    assert bits_per_character(math.log(2), tokens=10, chars=10) == pytest.approx(1.0)  # a fair coin
    assert bits_per_character(math.log(4), tokens=250, chars=1000) == pytest.approx(0.5)  # 4 chars a token
    assert perplexity(math.log(65)) == pytest.approx(65.0) and perplexity(0.0) == 1.0


def test_unigram_entropy():
    assert unigram_entropy(torch.tensor([5, 5, 5])) == 0.0
    assert unigram_entropy(torch.arange(4, 20)) == pytest.approx(math.log(16))
    p = torch.tensor([0.75, 0.25])
    assert unigram_entropy(torch.tensor([7, 7, 7, 9])) == pytest.approx(float(-(p * p.log()).sum()))


# --- batches ------------------------------------------------------------------------------------


def test_training_batches_are_shifted_windows_of_the_text():
    ids = torch.arange(4, 104)  # position i holds id i + 4, so a window shows where it starts
    batches = list(LMBatches(ids, batch_size=3, context_length=7, steps=5, seed=0))
    assert len(batches) == 5 == len(LMBatches(ids, 3, 7, 5))
    for batch in batches:
        x, y = batch["tgt_in"], batch["tgt_out"]
        assert batch["src"].shape == (3, 0) and x.shape == y.shape == (3, 7) and x.dtype == torch.long
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # the next token
        assert torch.equal(x, x[:, :1] + torch.arange(7)) and int(y.max()) <= 103  # inside the text


def test_training_batches_repeat_for_an_epoch_and_change_with_it():
    ids = torch.randint(4, 60, (500,), generator=torch.Generator().manual_seed(0))
    batches = LMBatches(ids, batch_size=4, context_length=16, steps=6, seed=3)

    def epoch(e, loader=batches):
        set_epoch(loader, e)  # as the training loop does, through utils.runtime.distributed
        return [b["tgt_in"] for b in loader]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(epoch(1, LMBatches(ids, 4, 16, 6, seed=4))[0], first[0])  # seed matters too

    batches.steps = 2  # a shorter last epoch: its batches are the first ones of the full epoch
    assert len(batches) == 2 and all(torch.equal(a, b) for a, b in zip(epoch(1), first))
    batches.steps = 6  # resume: skipping the batches already trained on leaves the same later ones
    set_epoch(batches, 1)
    resumed = [b["tgt_in"] for b in itertools.islice(batches, 4, None)]
    assert all(torch.equal(a, b) for a, b in zip(resumed, first[4:], strict=True))


def test_ranks_share_the_global_batch_of_one_process():
    ids = torch.arange(4, 304)
    whole = next(iter(LMBatches(ids, batch_size=6, context_length=5, steps=1, seed=1)))["tgt_in"]
    shares = [next(iter(LMBatches(ids, 3, 5, 1, seed=1, rank=r, world_size=2)))["tgt_in"] for r in (0, 1)]
    assert torch.equal(torch.cat(shares), whole)


@pytest.mark.parametrize("n", [2, 9, 10, 11, 31])
def test_validation_predicts_every_token_after_the_first_exactly_once(n):
    ids = torch.arange(4, 4 + n)  # distinct ids: a repeated prediction would show
    batches = list(validation_batches(ids, context_length=5, batch_size=2))
    predicted = torch.cat([b["tgt_out"][b["tgt_out"] != PAD_ID] for b in batches])
    assert torch.equal(predicted, ids[1:])
    for b in batches:
        x, y, real = b["tgt_in"], b["tgt_out"], b["tgt_out"] != PAD_ID
        assert b["src"].shape == (x.shape[0], 0) and x.shape[1] == 5 and x.shape[0] <= 2
        assert torch.equal(y[real], x[real] + 1)  # each real target is the token after its input
