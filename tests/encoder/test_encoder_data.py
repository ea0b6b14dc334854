"""The encoder-only tasks' data: BERT's masking statistics, the generated classification tasks, the digits."""

from __future__ import annotations

import pytest
import torch

from utils.data.classify import (
    LABELS,
    ClassificationDataset,
    classification_tokenizer,
    collate_classes,
    is_balanced,
    make_classification_task,
)
from utils.data.masking import Masker, MaskingCounts, MLMBatches, mask_tokens, mlm_validation_batches
from utils.data.tokenizer import ENCODER_SPECIALS, PAD_ID, CharTokenizer, tokenizer_from_dict
from utils.runtime.config import UserError

TOKENIZER = CharTokenizer("abcdefghijklmnopqrstuvwxyz ", ENCODER_SPECIALS)


def test_the_specials_have_their_ids_and_survive_a_checkpoint():
    assert (TOKENIZER.cls_id, TOKENIZER.sep_id, TOKENIZER.mask_id) == (4, 5, 6)
    again = tokenizer_from_dict(TOKENIZER.to_dict())
    assert again.id_to_token == TOKENIZER.id_to_token and again.mask_id == 6
    assert CharTokenizer("ab").mask_id == -1  # the toy tasks' vocabulary has no [MASK]
    a, b = TOKENIZER.encode("ab", add_eos=False)
    assert TOKENIZER.decode([4, a, 6, b, 5]) == "ab"  # specials dropped


def test_masking_statistics_of_a_large_batch_are_berts():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, TOKENIZER.vocab_size, (400, 500))
    ids[:, 450:] = PAD_ID  # padding is never chosen
    maskable = ids != PAD_ID
    counts = MaskingCounts()
    inputs, labels = mask_tokens(ids, maskable, TOKENIZER.mask_id, 7, TOKENIZER.vocab_size, generator, counts)
    shares = counts.shares()
    assert abs(shares["chosen"] - 0.15) < 0.01
    assert abs(shares["as_mask"] - 0.80) < 0.01
    assert abs(shares["as_random"] - 0.10) < 0.01 and abs(shares["unchanged"] - 0.10) < 0.01
    chosen = labels != PAD_ID
    assert not chosen[:, 450:].any() and (inputs[:, 450:] == PAD_ID).all()
    assert (labels[chosen] == ids[chosen]).all()  # the label is what was there
    assert ((inputs == TOKENIZER.mask_id) <= chosen).all()  # only chosen tokens become [MASK]
    replaced = chosen & (inputs != TOKENIZER.mask_id)
    assert (inputs[replaced] >= 7).all()  # random replacements are ordinary tokens, never a special


def test_mlm_batches_frame_windows_and_never_mask_specials_or_padding():
    ids = torch.tensor(TOKENIZER.encode("to be or not to be that is the question " * 40, add_eos=False))
    batches = MLMBatches(ids, TOKENIZER, batch_size=16, window=30, steps=3, seed=1)
    first = list(batches)
    assert len(first) == 3 and batches.counts.chosen > 0
    for batch in first:
        src, labels = batch["src"], batch["tgt_out"]
        assert src.shape == (16, 32) and batch["tgt_in"].shape == (16, 0)
        assert (src[:, 0] == TOKENIZER.cls_id).all() and (src[:, -1] == TOKENIZER.sep_id).all()
        assert (labels[:, [0, -1]] == PAD_ID).all()
    again = list(MLMBatches(ids, TOKENIZER, batch_size=16, window=30, steps=3, seed=1))
    assert all(torch.equal(a["src"], b["src"]) for a, b in zip(first, again))  # a resume sees the same
    validation = list(mlm_validation_batches(ids[:100], TOKENIZER, 30, 2, seed=0))
    last = validation[-1]["src"][-1]  # 100 = 3 x 30 + 10: the last window is short
    assert int((last != PAD_ID).sum()) == 12 and last[11] == TOKENIZER.sep_id
    assert torch.equal(
        validation[0]["src"], next(mlm_validation_batches(ids[:100], TOKENIZER, 30, 2, 0))["src"]
    )


def test_masker_pads_a_short_window_after_its_sep():
    windows = torch.tensor([[7, 8, 9], [7, 0, 0]])
    batch = Masker(TOKENIZER)(windows, torch.Generator().manual_seed(0))
    assert batch["src"].shape == (2, 5)
    assert batch["src"][1, 2].item() == TOKENIZER.sep_id and (batch["src"][1, 3:] == PAD_ID).all()


@pytest.mark.parametrize("task", ["palindrome", "sorted", "majority", "brackets"])
def test_classification_tasks_are_labelled_right_and_held_out(task):
    train, held_out = make_classification_task(task, 2000, 300, seed=3)
    assert not {t for t, _ in train} & {t for t, _ in held_out}
    truth = {"palindrome": lambda t: int(t == t[::-1]), "sorted": lambda t: int(list(t) == sorted(t)),
             "brackets": lambda t: int(is_balanced(t)),
             "majority": lambda t: "abcde".index(max("abcde", key=t.count))}[task]  # fmt: skip
    assert all(label == truth(text) for text, label in train + held_out)
    if task != "majority":  # the yes/no tasks are balanced
        positives = sum(label for _, label in train) / len(train)
        assert 0.4 < positives < 0.6
    tokenizer = classification_tokenizer(task)
    data = ClassificationDataset(held_out, tokenizer, len(LABELS[task]))
    batch = collate_classes([data[i] for i in range(5)])
    assert (batch["src"][:, 0] == tokenizer.cls_id).all() and batch["tgt_out"].shape == (5,)


def test_a_class_label_outside_the_head_is_a_one_line_error():
    with pytest.raises(UserError, match="outside the head's 2 classes") as err:
        ClassificationDataset([("abba", 1), ("abc", 2)], classification_tokenizer("palindrome"), 2)
    assert "\n" not in str(err.value)


def test_digits_split_by_seed_is_stratified_and_disjoint():
    from utils.data.digits import ImageDataset, PatchTokenizer, load_digits_split

    (train_x, train_y), (test_x, test_y) = load_digits_split(seed=0)
    assert len(train_y) + len(test_y) == 1797 and len(test_y) == 360
    assert train_x.shape[1:] == (1, 8, 8) and float(train_x.min()) >= 0.0 and float(train_x.max()) <= 1.0
    assert torch.bincount(test_y).min() >= 34  # every digit about 36 times
    flat = {tuple(x.flatten().tolist()) for x in train_x}
    assert sum(tuple(x.flatten().tolist()) in flat for x in test_x) < 5  # (a few digits are drawn twice)
    shifted = ImageDataset(train_x[:50], train_y[:50], shift=1, seed=0)
    assert all(shifted[i][0].sum() <= train_x[i].sum() + 1e-6 for i in range(50))  # moved, never wrapped
    tokens = PatchTokenizer(8, 2, 1).tokens()
    assert tokens[:3] == ["[CLS]", "r0c0", "r0c1"] and len(tokens) == 17
    with pytest.raises(UserError, match="cannot be cut into patches of 3"):
        PatchTokenizer(8, 3, 1).check(train_x, "--task digits")
    with pytest.raises(UserError, match=r"\(1, 8, 8\) expected"):
        PatchTokenizer(8, 2, 1).check(torch.zeros(2, 3, 8, 8), "images")
