"""What a Hugging Face training run reads, for each family and task (the twin of pytorch_version/run_data.py).

The same data as pytorch_version (utils.data.tasks.load_task_data, utils.data.lm, the same seed), in the
shape the Trainer and `generate` want: one dict per example, padded by the data collator.

    encoder-decoder    {input_ids: source + EOS, attention_mask, labels: target + EOS}; the decoder reads
                       BOS + target, built from the labels by the model
    GPT, a toy task    {input_ids: prompt + BOS + completion + EOS, attention_mask, labels}, the labels
                       -100 on the prompt and BOS (and, once padded, on the padding): the loss is on the
                       completion only, as pytorch_version's `hello<s>olleh</s>`
    GPT, --task lm     random windows of the training text (LMRounds, the very ones pytorch_version trains
                       on); evaluation reads the whole validation split (causal_trainer.evaluate_lm_hf)
    BERT, ViT          pytorch_version's own datasets and masked batches, as {input_ids, attention_mask,
                       labels} or {pixel_values, labels}: encoder_run_data.py

Labels follow transformers' causal-LM convention: they are the sequence itself and position t is
scored on token t + 1. A language model's window has one token more than the model reads (its last
position's target), so its labels are one longer than its input_ids.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import IterableDataset

from huggingface_version.tokenization import gpt_tokenizer_fast, to_fast_tokenizer
from utils.data.tasks import PairDataset, collate, first_example, load_task_data
from utils.runtime.config import RunConfig

logger = logging.getLogger("huggingface_version.train")


@dataclass
class HFRunData:
    """A run's data, whatever the family and task."""

    data_tokenizer: Any  # the toolkit's own (utils.data.tokenizer.CharTokenizer, BPE): the model's ids
    tokenizer: Any  # its PreTrainedTokenizerFast twin, saved with the model
    train_dataset: Any  # a list of example dicts; a language model: LMRounds
    eval_dataset: list[dict]
    probe: dict[str, torch.Tensor]  # a few held-out examples in the pair layout: --track_internals, figures
    debug_example: tuple[torch.Tensor, torch.Tensor]  # (src, tgt_in) of one held-out example: --debug
    description: str  # for the log
    references: list[str] | None = None  # the held-out outputs exact match compares with
    lengths: list[tuple[int, int]] | None = None  # (source, target) tokens per example: --max_tokens
    corpus: Any = None  # a language model's utils.data.lm.TextCorpus
    report: dict = field(default_factory=dict)  # what summary.json says about the data
    # the encoder-only tasks (encoder_run_data.py): pytorch_version's scoring, run on the HF model
    evaluate: Callable[[torch.nn.Module], dict] | None = None  # held-out metrics and "eval_examples"
    model_fields: dict = field(default_factory=dict)  # what the data tells the model config (labels, ids)
    finish: Callable | None = None  # (model, out) -> summary extras and figures, after training
    collator: Callable | None = None  # the batches' collate function (None: DataCollatorForSeq2Seq)


def load_hf_run_data(cfg: RunConfig, rank: int = 0, world_size: int = 1, device=None) -> HFRunData:
    """The run's data; `device`: where an encoder-only task's evaluation puts its batches."""
    if cfg.arch in ("bert", "vit"):
        from huggingface_version.encoder_run_data import encoder_data

        return encoder_data(cfg, rank, world_size, device)
    if cfg.task == "lm":
        return lm_data(cfg, rank, world_size)
    return pair_data(cfg)


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    """[(source, target)] -> [{input_ids: source + EOS, attention_mask, labels: target + EOS}]."""
    enc = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs])
    return [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"], enc["attention_mask"], enc["labels"])
    ]


def encode_prompts(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    """A GPT's examples: [(source, target)] -> [{input_ids: source BOS target EOS, attention_mask, labels:
    -100 on source and BOS, then target EOS}]. `tokenizer` appends BOS to each prompt
    (gpt_tokenizer_fast(..., prompt_separator=True))."""
    prompts = tokenizer([s for s, _ in pairs])["input_ids"]  # source + BOS
    completions = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for prompt, completion in zip(prompts, completions):
        completion = [*completion, tokenizer.eos_token_id]
        ids = prompt + completion
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [-100] * len(prompt) + completion})  # fmt: skip
    return examples


def pair_data(cfg: RunConfig) -> HFRunData:
    """The toy tasks and translation: (source, target) pairs; a GPT reads each source as a prompt."""
    train_pairs, eval_pairs, data_tokenizer = load_task_data(cfg)
    gpt = cfg.arch == "gpt"
    if gpt:
        tokenizer = gpt_tokenizer_fast(data_tokenizer, prompt_separator=True)  # same ids, padded on the left
        train = encode_prompts(tokenizer, train_pairs)
        # --max_tokens: pytorch_version batches a GPT's examples by its (prompt, completion + EOS) tokens
        lengths = [(x["labels"].count(-100) - 1, len(x["labels"]) - x["labels"].count(-100)) for x in train]
        encode = encode_prompts
    else:
        tokenizer = to_fast_tokenizer(data_tokenizer)  # same ids as data_tokenizer (characters or BPE)
        encode, lengths = encode_pairs, None
        train = encode(tokenizer, train_pairs)
    # the probe: the first held-out examples, batched exactly as pytorch_version's run_data does
    probe_set = PairDataset(eval_pairs[:8], data_tokenizer, source_eos=not gpt)
    probe = collate([probe_set[i] for i in range(len(probe_set))])
    return HFRunData(
        data_tokenizer=data_tokenizer,
        tokenizer=tokenizer,
        train_dataset=train,
        eval_dataset=encode(tokenizer, eval_pairs),
        probe=probe,
        debug_example=first_example(probe, data_tokenizer.pad_id),
        description=f"{len(train_pairs)} train / {len(eval_pairs)} eval examples",
        references=[t for _, t in eval_pairs],
        lengths=lengths,
    )


def lm_example(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of utils.data.lm (pair layout: tgt_in = x, tgt_out = the next token of each) -> the model's
    input_ids x and labels x + its last next token, one longer (position t is scored on labels[t + 1])."""
    x, y = batch["tgt_in"], batch["tgt_out"]
    return {"input_ids": x, "attention_mask": (x != 0).long(), "labels": torch.cat([x[:, :1], y], dim=1)}


class LMRounds(IterableDataset):
    """A language model's training batches for the Trainer, one round a pass.

    Pass r (1, 2, ...) yields the batches of round r of utils.data.lm.LMBatches (epoch r: the windows
    pytorch_version trains round r on) as `lm_example`s. A resumed run starts at the round after the
    `rounds_done()` it has behind it (set by the trainer once it knows the resumed step); the Trainer's
    skipping of a round's first batches draws them as a first run would, so batch i of round r is
    always the same. Use it as a DataLoader's dataset with batch_size=None: the batches are made here.
    `example` turns a batch into the model's inputs: `lm_example`, or a masked LM's (encoder_run_data.py,
    over utils.data.masking.MLMBatches, which draws its windows the same way).
    """

    def __init__(
        self, batches, rounds_done: Callable[[], int] = lambda: 0, example: Callable | None = None
    ) -> None:
        self.batches, self.rounds_done = batches, rounds_done
        self.example = example or lm_example  # a batch of the pair layout -> the model's inputs
        self.next_round: int | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if self.next_round is None:
            self.next_round = self.rounds_done() + 1
        self.batches.set_epoch(self.next_round)
        self.next_round += 1
        return (self.example(batch) for batch in self.batches)


def lm_data(cfg: RunConfig, rank: int = 0, world_size: int = 1) -> HFRunData:
    """A language model on --data_file: random windows to train on, the whole validation split to score.

    A round is --eval_every optimizer steps (with gradient accumulation, that many windows of batches
    each), --max_steps in all; under torchrun each process reads its share of every window batch."""
    from utils.data.lm import LMBatches, load_text_corpus, unigram_entropy, validation_batches

    corpus = load_text_corpus(cfg.data_file, cfg.val_file, cfg.tokenizer, cfg.vocab_size, cfg.context_length)
    per_round = cfg.eval_every * cfg.gradient_accumulation_steps  # batches of a round's optimizer steps
    batches = LMBatches(corpus.train_ids, cfg.batch_size, cfg.context_length, per_round, cfg.seed, rank,
                        world_size)  # fmt: skip
    first = next(validation_batches(corpus.val_ids, cfg.context_length, 8))
    short = min(24, cfg.context_length)  # the figures and the trace read a window of a readable length
    probe = {key: value[:, :short] if key != "src" else value for key, value in first.items()}
    # what the Trainer's own evaluation loop would read (the trainer's evaluate reads the split itself)
    evaluation = [lm_example(window) for window in validation_batches(corpus.val_ids, cfg.context_length, 1)]
    entropy = unigram_entropy(corpus.train_ids)
    data = {"train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids),
            "train_chars": corpus.train_chars, "val_chars": corpus.val_chars, "vocab_size": corpus.vocab_size,
            "tokenizer": cfg.tokenizer, "unigram_entropy": entropy}  # fmt: skip
    logger.info("language model on %s: %s train / %s validation tokens (%s), vocabulary %d; a model that "
                "ignores context scores the unigram entropy, %.3f nats per token", cfg.data_file,
                f"{data['train_tokens']:,}", f"{data['val_tokens']:,}", cfg.tokenizer, corpus.vocab_size,
                entropy)  # fmt: skip
    rounds = math.ceil(cfg.max_steps / cfg.eval_every)
    return HFRunData(
        data_tokenizer=corpus.tokenizer,
        tokenizer=gpt_tokenizer_fast(corpus.tokenizer),  # the text as it is: nothing appended
        train_dataset=LMRounds(batches),
        eval_dataset=evaluation,
        probe=probe,
        debug_example=(probe["src"][:1], probe["tgt_in"][:1, :12]),
        description=f"{data['train_tokens']:,} train / {data['val_tokens']:,} validation tokens, "
        f"{cfg.max_steps} steps in {rounds} rounds of {cfg.eval_every}",
        corpus=corpus,
        report={"data": data},
    )
