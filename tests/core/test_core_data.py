"""Toy tasks, the character tokenizer and batching."""

from __future__ import annotations

import json

import pytest
import torch

from utils.data.tasks import PairDataset, collate, make_loader, make_toy_task, pad_batch, tokenizer_for_task
from utils.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer, tokenizer_from_dict
from utils.runtime.config import UserError

TASKS = ["copy", "reversal", "addition"]


@pytest.mark.parametrize("task", TASKS)
def test_train_and_eval_sources_are_disjoint_and_unique(task):
    train, held_out = make_toy_task(task, 600, 200, seed=3, min_len=2, max_len=3)
    assert len(train) == 600 and len(held_out) == 200
    sources = [s for s, _ in train + held_out]
    assert len(set(sources)) == len(sources)
    assert not {s for s, _ in train} & {s for s, _ in held_out}


@pytest.mark.parametrize("task", TASKS)
def test_tasks_are_deterministic_by_seed(task):
    assert make_toy_task(task, 50, 10, seed=5) == make_toy_task(task, 50, 10, seed=5)
    assert make_toy_task(task, 50, 10, seed=5) != make_toy_task(task, 50, 10, seed=6)


def test_copy_and_reversal_targets_and_lengths():
    for task, expected in (("copy", lambda s: s), ("reversal", lambda s: s[::-1])):
        train, held_out = make_toy_task(task, 300, 50, seed=1, min_len=4, max_len=7)
        for src, tgt in train + held_out:
            assert tgt == expected(src)
            assert 4 <= len(src) <= 7 and src.isalpha() and src.islower()
        lengths = {len(s) for s, _ in train}
        assert lengths == {4, 5, 6, 7}  # the whole range is used


def test_addition_targets_are_the_sums():
    train, held_out = make_toy_task("addition", 300, 50, seed=2)
    for src, tgt in train + held_out:
        a, b = src.split("+")
        assert tgt == f"{int(a) + int(b):04d}" and len(a) == len(b) == 3  # zero-padded: 007+120 -> 0127
        assert 0 <= int(a) <= 999 and 0 <= int(b) <= 999
    alphabet = set(tokenizer_for_task("addition").alphabet)
    assert all(set(s + t) <= alphabet for s, t in train)


def test_bad_task_requests_are_user_errors():
    with pytest.raises(UserError, match="unknown task 'nope'"):
        make_toy_task("nope", 10, 10)
    with pytest.raises(UserError, match="too many"):
        make_toy_task("copy", 500, 500, min_len=1, max_len=2)  # only 702 strings exist
    with pytest.raises(UserError, match="1,000,000"):
        make_toy_task("addition", 999_999, 2)


def test_char_tokenizer_round_trip_and_specials():
    tok = CharTokenizer("cab")
    assert tok.alphabet == "abc" and tok.vocab_size == len(tok) == 7
    assert tok.id_to_token[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (
        (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    )
    ids = tok.encode("cab")
    assert ids == [6, 4, 5, EOS_ID]
    assert tok.encode("cab", add_eos=False) == [6, 4, 5]
    assert tok.decode(ids) == "cab"
    assert tok.decode(torch.tensor(ids + [PAD_ID, PAD_ID])) == "cab"
    assert tok.decode([BOS_ID, 4, PAD_ID, 5, EOS_ID, 6]) == "ab"  # stops at EOS, drops PAD and BOS
    assert tok.tokens([BOS_ID, 4, EOS_ID]) == ["<s>", "a", "</s>"]


def test_unknown_characters_become_unk():
    tok = tokenizer_for_task("copy")
    ids = tok.encode("aZ!b")
    assert ids == [tok.token_to_id["a"], UNK_ID, UNK_ID, tok.token_to_id["b"], EOS_ID]
    assert tok.decode(ids) == "a??b"


@pytest.mark.parametrize("task", TASKS)
def test_every_task_string_round_trips(task):
    tok = tokenizer_for_task(task)
    train, _ = make_toy_task(task, 100, 1, seed=0)
    for src, tgt in train:
        assert UNK_ID not in tok.encode(src) + tok.encode(tgt)
        assert tok.decode(tok.encode(src)) == src and tok.decode(tok.encode(tgt)) == tgt


def test_tokenizer_save_load_and_bad_files(tmp_path):
    tok = tokenizer_for_task("addition")
    tok.save(tmp_path / "tok.json")
    loaded = CharTokenizer.load(tmp_path / "tok.json")
    assert loaded.id_to_token == tok.id_to_token
    assert tokenizer_from_dict(tok.to_dict()).id_to_token == tok.id_to_token

    bad = {"missing.json": None, "not_json.json": "{oops", "list.json": "[1, 2]",
           "wrong_type.json": json.dumps({"type": "bpe", "alphabet": "ab"})}  # fmt: skip
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UserError):
            CharTokenizer.load(tmp_path / name)
    for data in ({"type": "bpe"}, None, ["char"]):
        with pytest.raises(UserError, match="tokenizer"):
            tokenizer_from_dict(data)


def test_pad_batch_right_pads():
    out = pad_batch([[5, 6, 2], [7, 2]], PAD_ID)
    assert torch.equal(out, torch.tensor([[5, 6, 2], [7, 2, PAD_ID]]))
    assert out.dtype == torch.long


def test_collate_shapes_and_teacher_forcing_shift():
    tok = tokenizer_for_task("reversal")
    pairs = [("abcd", "dcba"), ("xy", "yx"), ("pqr", "rqp")]
    batch = collate([PairDataset(pairs, tok)[i] for i in range(3)])
    assert set(batch) == {"src", "tgt_in", "tgt_out"}
    assert batch["src"].shape == (3, 5)  # longest source + EOS
    assert batch["tgt_in"].shape == batch["tgt_out"].shape == (3, 5)  # longest target + 1
    assert all(t.dtype == torch.long for t in batch.values())

    for i, (src, tgt) in enumerate(pairs):
        n = len(tgt)
        assert batch["src"][i].tolist() == tok.encode(src) + [PAD_ID] * (4 - len(src))
        assert batch["tgt_in"][i, 0] == BOS_ID
        assert batch["tgt_in"][i, 1 : n + 1].tolist() == tok.encode(tgt, add_eos=False)
        assert batch["tgt_out"][i, :n].tolist() == tok.encode(tgt, add_eos=False)
        assert batch["tgt_out"][i, n] == EOS_ID
        assert (batch["tgt_out"][i, n + 1 :] == PAD_ID).all()
        # the decoder input at position t + 1 is the target of position t
        assert torch.equal(batch["tgt_in"][i, 1 : n + 1], batch["tgt_out"][i, :n])


def test_loader_order_is_deterministic_by_seed():
    tok = tokenizer_for_task("copy")
    train, _ = make_toy_task("copy", 64, 1, seed=0)
    dataset = PairDataset(train, tok)

    def order(seed: int) -> list[list[int]]:
        return [b["src"][:, 0].tolist() for b in make_loader(dataset, 16, True, seed)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    in_order = torch.cat([b["src"][:, 0] for b in make_loader(dataset, 16, False)])
    assert in_order.tolist() == [ids[0] for ids in dataset.src]
