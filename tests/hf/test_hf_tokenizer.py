"""The `tokenizers`-built tokenizers: same ids as utils.data's, HF calling conventions; a GPT's keeps any
text exactly (newlines, spaces, unicode) and pads on the left."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from huggingface_version.tokenization import char_tokenizer_fast, from_char_tokenizer, gpt_tokenizer_fast
from utils.data.tasks import tokenizer_for_task
from utils.data.tokenizer import CharTokenizer


@pytest.mark.parametrize("task, text", [("reversal", "hello"), ("addition", "12+345"), ("copy", "a?b")])
def test_same_ids_as_the_char_tokenizer(task, text):
    ours = tokenizer_for_task(task)
    fast = from_char_tokenizer(ours)
    assert fast(text).input_ids == ours.encode(text)  # EOS appended, unknown characters -> <unk>
    assert fast.get_vocab() == ours.token_to_id
    assert (fast.pad_token_id, fast.bos_token_id, fast.eos_token_id, fast.unk_token_id) == (0, 1, 2, 3)


def test_text_target_padding_and_decode_round_trip(tmp_path):
    fast = char_tokenizer_fast("abcdefghijklmnopqrstuvwxyz")
    enc = fast(["abc", "hello"], text_target=["cba", "olleh"], padding=True)
    assert enc["input_ids"][0][-2:] == [0, 0] and enc["attention_mask"][0] == [1, 1, 1, 1, 0, 0]
    assert enc["labels"][1][-1] == 2
    texts = [fast.decode(ids, skip_special_tokens=True) for ids in enc["labels"]]
    assert texts == ["cba", "olleh"]  # no spaces between characters, specials dropped
    assert fast.decode([1, 5, 6, 2, 0]) == "<s>bc</s><pad>"
    fast.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("hello world").input_ids == fast("hello world").input_ids
    assert loaded.decode(loaded("hello").input_ids, skip_special_tokens=True) == "hello"


SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare" / "input.txt"
LINES = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def _corpus() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.is_file() else LINES


def test_a_gpt_tokenizer_keeps_every_character_of_any_text_and_pads_on_the_left():
    text = _corpus()
    ours = CharTokenizer(text + "\t é€ 😀")
    fast = gpt_tokenizer_fast(ours)
    assert fast.padding_side == "left"
    lines = text.splitlines(keepends=True)
    for line in lines[:2000] + ["\t é€ 😀\n", "  two  spaces\n\n"]:
        ids = fast(line).input_ids  # nothing appended: a language model continues the text itself
        assert ids == ours.encode(line, add_eos=False), line
        assert fast.decode(ids) == line, line
    ids = fast(text).input_ids
    assert fast.decode(ids) == text and len(ids) == len(text)  # the whole text, newlines and all
    batch = fast(["ab\n", "a"], padding=True)
    assert batch["input_ids"][1][:2] == [0, 0] and batch["attention_mask"][1] == [0, 0, 1]


def test_a_toy_task_gpt_tokenizer_ends_the_prompt_with_bos(tmp_path):
    fast = gpt_tokenizer_fast(CharTokenizer("abcdefghijklmnopqrstuvwxyz"), prompt_separator=True)
    assert fast("hello").input_ids == [*CharTokenizer("abcdefghijklmnopqrstuvwxyz").encode("hello", False), 1]
    assert fast.decode(fast("hello").input_ids + [18, 2], skip_special_tokens=True) == "helloo"
    fast.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left" and loaded("hi").input_ids == fast("hi").input_ids


def test_a_gpt_tokenizer_wraps_byte_level_bpe_losslessly():
    from utils.data.bpe import BPETokenizer

    text = LINES * 20 + "naïve café — 東京\n"
    bpe = BPETokenizer.train([text], 300, byte_level=True)
    fast = gpt_tokenizer_fast(bpe)
    for sample in (LINES, "naïve café — 東京\n", "  \n\t x"):
        assert fast(sample).input_ids == bpe.encode(sample, add_eos=False)
        assert fast.decode(fast(sample).input_ids) == sample
