"""The `tokenizers`-built character tokenizer: same ids as utils.data.tokenizer, HF calling conventions."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from huggingface_version.tokenization import char_tokenizer_fast, from_char_tokenizer
from utils.data.tasks import tokenizer_for_task


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
