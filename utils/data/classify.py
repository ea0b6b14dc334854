"""Sequence classification on generated strings (`--arch bert`): tasks where attention must matter.

    palindrome   is the string the same backwards?          no | yes
    sorted       are its letters in alphabetical order?     no | yes
    majority     which letter occurs most often?            a..e       (never a tie)
    brackets     are its ( ) [ ] balanced and nested?       no | yes

Each answer depends on the whole string: the [CLS] token (or the mean) has to gather the string's
letters in relation to each other. Half the examples of the yes/no tasks are positives; of the
negatives, half are near misses, a positive with one change (a letter of a palindrome, two
neighbours of a sorted string swapped, one bracket changed), so counting letters or looking at one
end is not enough, and half are drawn at random, which a model tells apart first. As for the toy
tasks, no string of the held-out set is also in the training set.

A batch has the toolkit's pair layout (utils.data.tasks), with the input as the encoder's source:
    src      (B, S)  [CLS] letters [SEP], right-padded with PAD
    tgt_in   (B, 0)  nothing: an encoder-only model has no target side
    tgt_out  (B,)    the class id
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset

from utils.data.tasks import pad_batch
from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer
from utils.runtime.config import CLASSIFY_TASKS, UserError

ALPHABETS = {"palindrome": "abcd", "sorted": "abcdefghij", "majority": "abcde",
             "brackets": "()[]"}  # fmt: skip
LABELS = {"palindrome": ("no", "yes"), "sorted": ("no", "yes"), "majority": tuple("abcde"),
          "brackets": ("no", "yes")}  # fmt: skip
Example = tuple[str, int]  # (text, class id)


def _random_negative(task: str, rng: random.Random, n: int, is_positive) -> Example:
    """A random string of the task's letters, labelled by what it is (rarely a positive)."""
    text = "".join(rng.choices(ALPHABETS[task], k=n))
    return text, int(is_positive(text))


def _palindrome(rng: random.Random, n: int) -> Example:
    half = rng.choices(ALPHABETS["palindrome"], k=(n + 1) // 2)
    text = list(half + half[: n // 2][::-1])
    kind = rng.random()
    if kind < 0.5:
        return "".join(text), 1
    if kind < 0.75:
        return _random_negative("palindrome", rng, n, lambda t: t == t[::-1])
    i = rng.randrange(n // 2) if n > 1 else 0  # change one letter of the first half: no longer mirrored
    text[i] = rng.choice([c for c in ALPHABETS["palindrome"] if c != text[n - 1 - i]])
    return "".join(text), int(text == text[::-1])


def _sorted(rng: random.Random, n: int) -> Example:
    text = sorted(rng.choices(ALPHABETS["sorted"], k=n))
    kind = rng.random()
    if kind < 0.5 or len(set(text)) == 1:
        return "".join(text), 1
    if kind < 0.75:
        return _random_negative("sorted", rng, n, lambda t: list(t) == sorted(t))
    i = rng.choice([i for i in range(n - 1) if text[i] != text[i + 1]])
    text[i], text[i + 1] = text[i + 1], text[i]
    return "".join(text), 0


def _majority(rng: random.Random, n: int) -> Example:
    while True:
        text = rng.choices(ALPHABETS["majority"], k=n)
        counts = sorted(((text.count(c), c) for c in ALPHABETS["majority"]), reverse=True)
        if counts[0][0] > counts[1][0]:
            return "".join(text), ALPHABETS["majority"].index(counts[0][1])


def _balanced(rng: random.Random, pairs: int) -> str:
    """A random balanced string of `pairs` bracket pairs, two kinds, nested at random."""
    out, stack = [], []
    opened = 0
    while len(out) < 2 * pairs:
        if opened < pairs and (not stack or rng.random() < 0.5):
            stack.append(rng.choice("(["))
            out.append(stack[-1])
            opened += 1
        else:
            out.append(")" if stack.pop() == "(" else "]")
    return "".join(out)


def is_balanced(text: str) -> bool:
    stack = []
    for c in text:
        if c in "([":
            stack.append(c)
        elif not stack or stack.pop() != {")": "(", "]": "["}[c]:
            return False
    return not stack


def _brackets(rng: random.Random, n: int) -> Example:
    text = list(_balanced(rng, max(1, n // 2)))
    kind = rng.random()
    if kind < 0.5:
        return "".join(text), 1
    if kind < 0.75:
        return _random_negative("brackets", rng, len(text), is_balanced)
    i = rng.randrange(len(text))
    text[i] = rng.choice([c for c in ALPHABETS["brackets"] if c != text[i]])
    return "".join(text), int(is_balanced("".join(text)))


MAKERS = {"palindrome": _palindrome, "sorted": _sorted, "majority": _majority, "brackets": _brackets}


def make_classification_task(task: str, train_size: int, eval_size: int, seed: int = 42, min_len: int = 3,
                             max_len: int = 16) -> tuple[list[Example], list[Example]]:  # fmt: skip
    """`train_size` + `eval_size` examples with distinct strings, then split (none held out is trained on)."""
    if task not in CLASSIFY_TASKS:
        raise UserError(f"unknown classification task {task!r}; expected one of {', '.join(CLASSIFY_TASKS)}")
    if task == "brackets" and max_len < 2:
        raise UserError("brackets needs max_len >= 2 (a pair of brackets)")
    rng, seen, examples = random.Random(seed), set(), []
    needed, tries = train_size + eval_size, 0
    while len(examples) < needed:
        tries += 1
        if tries > 50 * needed:
            raise UserError(f"could not draw {needed} distinct {task} strings of length {min_len}-{max_len}; "
                            "lower --train_size/--eval_size or raise --max_len")  # fmt: skip
        text, label = MAKERS[task](rng, rng.randint(min_len, max_len))
        if text not in seen:
            seen.add(text)
            examples.append((text, label))
    return examples[:train_size], examples[train_size:]


def classification_tokenizer(task: str) -> CharTokenizer:
    return CharTokenizer(ALPHABETS[task], ENCODER_SPECIALS)


class ClassificationDataset(Dataset):
    """Strings encoded once as [CLS] letters [SEP], with their class ids."""

    def __init__(self, examples: list[Example], tokenizer, num_labels: int) -> None:
        bad = [label for _, label in examples if not 0 <= label < num_labels]
        if bad:
            raise UserError(
                f"class label {bad[0]} is outside the head's {num_labels} classes (0..{num_labels - 1})"
            )
        self.examples = examples
        self.src = [
            [tokenizer.cls_id, *tokenizer.encode(t, add_eos=False), tokenizer.sep_id] for t, _ in examples
        ]
        self.labels = [label for _, label in examples]

    @property
    def src_lengths(self) -> list[int]:
        return [len(s) for s in self.src]

    @property
    def tgt_lengths(self) -> list[int]:
        return [1] * len(self.src)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.src[i], self.labels[i]


def collate_classes(batch: list[tuple]) -> dict[str, torch.Tensor]:
    """(input, class) pairs -> {"src": (B, S), "tgt_in": (B, 0), "tgt_out": (B,)}; inputs are ids
    (padded) or images (stacked)."""
    first = batch[0][0]
    if isinstance(first, torch.Tensor):
        src = torch.stack([x for x, _ in batch])
    else:
        src = pad_batch([x for x, _ in batch])
    labels = torch.tensor([y for _, y in batch], dtype=torch.long)
    return {"src": src, "tgt_in": torch.zeros(len(batch), 0, dtype=torch.long), "tgt_out": labels}
