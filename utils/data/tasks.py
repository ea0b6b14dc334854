"""The data of a run (toy tasks generated from a seed, or a parallel corpus) and its batching.

Each example is a (source, target) pair of strings. A batch holds
    src      (B, S)  source ids + EOS, right-padded with PAD
    tgt_in   (B, T)  BOS + target ids          (decoder input, "shifted right")
    tgt_out  (B, T)  target ids + EOS          (what each position must predict)

Batches hold `batch_size` examples in random order, or, with `max_tokens`, examples of
similar length up to that many padded tokens (utils.data.batching.TokenBatchSampler).
"""

from __future__ import annotations

import logging
import random
import string

import torch
from torch.utils.data import DataLoader, Dataset

from utils.data.batching import TokenBatchSampler
from utils.data.corpus import Pair, load_parallel
from utils.data.tokenizer import BOS_ID, PAD_ID, CharTokenizer
from utils.runtime.config import TOY_TASKS, ModelConfig, UserError

logger = logging.getLogger(__name__)

# the longest sequence the model's position table covers (ModelConfig.max_position's default)
MAX_SEQUENCE_TOKENS = ModelConfig.__dataclass_fields__["max_position"].default

ALPHABETS = {
    "copy": string.ascii_lowercase,
    "reversal": string.ascii_lowercase,
    "addition": string.digits + "+",
}


def _random_string(rng: random.Random, min_len: int, max_len: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(min_len, max_len)))


def _make_example(task: str, rng: random.Random, min_len: int, max_len: int) -> Pair:
    if task == "copy":
        s = _random_string(rng, min_len, max_len)
        return s, s
    if task == "reversal":
        s = _random_string(rng, min_len, max_len)
        return s, s[::-1]
    # fixed width, as a sum is written on paper: each digit has its place, the same in every example
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"{a:03d}+{b:03d}", f"{a + b:04d}"


def make_toy_task(
    task: str, train_size: int, eval_size: int, seed: int = 42, min_len: int = 3, max_len: int = 16
) -> tuple[list[Pair], list[Pair]]:
    """Generate `train_size` + `eval_size` examples with distinct sources, then split.

    Sources are unique over both sets, so no eval source is ever seen in training.
    """
    if task not in TOY_TASKS:
        raise UserError(f"unknown task {task!r}; expected a toy task: {', '.join(TOY_TASKS)}")
    needed = train_size + eval_size
    if task == "addition" and needed > 1000 * 1000:
        raise UserError(f"addition has 1,000,000 distinct problems; asked for {needed}")
    if task != "addition":
        space = sum(26**n for n in range(min_len, max_len + 1))
        if needed > space // 2:
            raise UserError(
                f"{needed} distinct strings of length {min_len}-{max_len} are too many "
                f"(only {space} exist); lower the sizes or raise max_len"
            )
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[Pair] = []
    while len(pairs) < needed:
        src, tgt = _make_example(task, rng, min_len, max_len)
        if src not in seen:
            seen.add(src)
            pairs.append((src, tgt))
    return pairs[:train_size], pairs[train_size:]


def tokenizer_for_task(task: str) -> CharTokenizer:
    return CharTokenizer(ALPHABETS[task])


def load_task_data(cfg) -> tuple[list[Pair], list[Pair], CharTokenizer]:
    """(train pairs, eval pairs, tokenizer) of the run's task: the one place both versions get data.

    Toy tasks are generated (--train_size, --eval_size); translation reads --data_dir's
    train and val files and trains the BPE tokenizer on the training pairs.
    """
    if cfg.task == "translation":
        return load_translation_data(cfg)
    train, held_out = make_toy_task(
        cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len
    )
    return train, held_out, tokenizer_for_task(cfg.task)


def load_translation_data(cfg):
    """DIR/train.{src,tgt} (the first --max_train_lines) and DIR/val.{src,tgt}, and a BPE tokenizer
    (--vocab_size, shared unless --separate_vocab) learnt from the training pairs only."""
    from utils.data.bpe import train_bpe  # needs the `tokenizers` package, toy tasks do not

    train = load_parallel(cfg.data_dir, "train", cfg.src_lang, cfg.tgt_lang, cfg.max_train_lines)
    val = load_parallel(cfg.data_dir, "val", cfg.src_lang, cfg.tgt_lang)
    tokenizer = train_bpe(train, cfg.vocab_size, cfg.separate_vocab)
    train, val = (_drop_too_long(pairs, tokenizer, name) for pairs, name in ((train, "train"), (val, "val")))
    logger.info(
        "translation %s->%s from %s: %d train / %d val pairs; BPE vocabulary %s",
        cfg.src_lang, cfg.tgt_lang, cfg.data_dir, len(train), len(val),
        f"{tokenizer.src_vocab_size} + {tokenizer.tgt_vocab_size} (separate)" if cfg.separate_vocab
        else f"{tokenizer.vocab_size} (shared)",
    )  # fmt: skip
    return train, val, tokenizer


def _drop_too_long(pairs: list[Pair], tokenizer, name: str) -> list[Pair]:
    """Pairs whose source or target fits the model's position table (MAX_SEQUENCE_TOKENS)."""
    src = tokenizer.source.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.target.encode_batch([t for _, t in pairs])
    kept = [p for p, s, t in zip(pairs, src, tgt) if max(len(s), len(t)) <= MAX_SEQUENCE_TOKENS]
    if len(kept) < len(pairs):
        logger.warning(
            "%s: dropped %d pairs longer than %d tokens", name, len(pairs) - len(kept), MAX_SEQUENCE_TOKENS
        )
    if not kept:
        raise UserError(f"every {name} pair is longer than {MAX_SEQUENCE_TOKENS} tokens")
    return kept


def _encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    if hasattr(tokenizer, "encode_batch"):  # BPE: many at once, in Rust
        return tokenizer.encode_batch(texts)
    return [tokenizer.encode(t) for t in texts]


class PairDataset(Dataset):
    """Source and target strings encoded once, up front (sources + EOS, targets + EOS).

    `src_tokenizer` alone encodes both sides with their own vocabulary (`.source`, `.target`);
    a `tgt_tokenizer` overrides the target side. `source_eos=False` leaves EOS off the sources: a
    decoder-only model reads the source as a prompt, and the BOS that starts the target follows it
    as the separator (`hello<s>olleh</s>`).
    """

    def __init__(self, pairs: list[Pair], src_tokenizer, tgt_tokenizer=None, source_eos: bool = True) -> None:
        tgt_tokenizer = tgt_tokenizer or getattr(src_tokenizer, "target", src_tokenizer)
        src_tokenizer = getattr(src_tokenizer, "source", src_tokenizer)
        self.pairs = pairs
        self.src = _encode_all(src_tokenizer, [s for s, _ in pairs])
        if not source_eos:
            self.src = [ids[:-1] for ids in self.src]  # every encoding ends with its EOS
        self.tgt = _encode_all(tgt_tokenizer, [t for _, t in pairs])

    @property
    def src_lengths(self) -> list[int]:
        return [len(s) for s in self.src]

    @property
    def tgt_lengths(self) -> list[int]:
        return [len(t) for t in self.tgt]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.src[i], self.tgt[i]


def pad_batch(seqs: list[list[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    src = pad_batch([s for s, _ in batch])
    tgt = pad_batch([[BOS_ID] + t for _, t in batch])  # BOS y1 .. yn EOS
    return {"src": src, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


def first_example(batch: dict[str, torch.Tensor], pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Row 0 of a batch without padding: src (1, S) and tgt_in (1, T) = BOS y1 .. yn."""
    return example_row(batch, 0, pad_id)


def example_row(
    batch: dict[str, torch.Tensor], i: int, pad_id: int = PAD_ID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i of a batch without padding: src (1, S) and tgt_in (1, T) = BOS y1 .. yn.

    tgt_in's real length is that of tgt_out (y1 .. yn EOS): a shorter row's tgt_in also
    holds its EOS, which is a label, not an input the model is asked to continue.
    """
    src, tgt_in, tgt_out = batch["src"][i : i + 1], batch["tgt_in"][i : i + 1], batch["tgt_out"][i : i + 1]
    if src.dim() > 2:  # an image (a ViT's source): nothing is padded
        return src, tgt_in
    return src[:, : int((src[0] != pad_id).sum())], tgt_in[:, : int((tgt_out[0] != pad_id).sum())]


def make_loader(
    dataset: PairDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    max_tokens: int = 0,
) -> DataLoader:
    """Batches of `batch_size` examples, or with `max_tokens` > 0 of similar-length examples up to
    that many padded tokens each (then `batch_size` is not used). Same seed, same batch order."""
    generator = torch.Generator().manual_seed(seed)
    if max_tokens > 0:
        sampler = TokenBatchSampler(dataset.src_lengths, dataset.tgt_lengths, max_tokens, shuffle, generator)
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, generator=generator, num_workers=num_workers
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        generator=generator,
        num_workers=num_workers,
    )
