"""What a training run reads and how it is scored, for each kind of task.

    toy tasks, translation   pairs of strings; an epoch is a pass over the training pairs; scored by
                             exact match (toy) or BLEU (translation) of greedy outputs
    lm                       one text; a "round" is --eval_every optimizer steps on random windows
                             (utils/data/lm.py), --max_steps in all; scored by the validation loss
    classification, digits,  the encoder-only tasks: pytorch_version/encoder_data.py
    mlm

The training loop (pytorch_version/train.py) sees only a `RunData`: a loader of batches in the pair
layout {"src", "tgt_in", "tgt_out"} (a language model's `src` is empty), how many rounds to run,
and how to evaluate a model, so both families and every task share one loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from pytorch_version.evaluate import evaluate, evaluate_lm
from utils.data.stats import report_data
from utils.data.tasks import PairDataset, first_example, load_task_data, make_loader
from utils.runtime.config import CLASSIFY_TASKS, RunConfig
from utils.runtime.distributed import World, make_train_loader

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """A run's data, whatever the task."""

    tokenizer: Any
    train_loader: Any  # a DataLoader, or utils.data.lm.LMBatches: batches in the pair layout
    evaluate: Callable[[torch.nn.Module], dict]  # held-out metrics (and "eval_examples") of a model
    debug_example: tuple[torch.Tensor, torch.Tensor]  # (src, tgt_in) of one held-out example: --debug
    probe: dict[str, torch.Tensor]  # a few held-out examples: --track_internals and the figures
    description: str  # for the log: "20000 train / 500 eval examples"
    rounds: int  # epochs; lm: evaluations
    report: Callable[[Path], dict]  # what summary.json says about the data
    eval_pairs: list = field(default_factory=list)  # the held-out pairs (translation's final evaluation)
    steps_in_round: Callable[[int], int] | None = None  # lm: batches of round `epoch`
    model_fields: dict = field(default_factory=dict)  # what the data tells the model config (encoder-only)
    finish: Callable[[torch.nn.Module, Path], dict] | None = None  # after training: figures, summary extras

    def begin_round(self, epoch: int) -> None:
        """A language model's last round may be shorter: --max_steps is the total."""
        if self.steps_in_round is not None:
            self.train_loader.steps = self.steps_in_round(epoch)


def batches_in_round(cfg: RunConfig, epoch: int) -> int:
    """A step-paced run's (lm, mlm) batches in round `epoch`: --eval_every optimizer steps of
    --gradient_accumulation_steps batches, fewer in the last round so that --max_steps is the total."""
    steps = min(cfg.eval_every, cfg.max_steps - (epoch - 1) * cfg.eval_every)
    return cfg.gradient_accumulation_steps * steps


def load_run_data(cfg: RunConfig, world: World, device: torch.device) -> RunData:
    from pytorch_version import encoder_data

    if cfg.task == "lm":
        return lm_data(cfg, world, device)
    if cfg.task == "mlm":
        return encoder_data.mlm_data(cfg, world, device)
    if cfg.task == "digits":
        return encoder_data.digits_data(cfg, world, device)
    if cfg.task in CLASSIFY_TASKS:
        return encoder_data.classification_data(cfg, world, device)
    return pair_data(cfg, world, device)


def pair_data(cfg: RunConfig, world: World, device: torch.device) -> RunData:
    """The toy tasks and translation: (source, target) pairs. A GPT reads each source as a prompt."""
    train_pairs, eval_pairs, tokenizer = load_task_data(cfg)
    dataset = partial(PairDataset, src_tokenizer=tokenizer, source_eos=cfg.arch == "transformer")
    train = dataset(train_pairs)
    if cfg.max_tokens and not world.distributed:  # batches by length, drawn from the loader's generator
        train_loader = make_loader(train, cfg.batch_size, True, cfg.seed, cfg.dataloader_num_workers,
                                   cfg.max_tokens)  # fmt: skip
    else:  # rank r of N reads its share of one order per (seed, epoch); one process reads it all
        train_loader = make_train_loader(train, cfg.batch_size, world, cfg.seed, cfg.dataloader_num_workers,
                                         cfg.max_tokens)  # fmt: skip
    eval_loader = make_loader(dataset(eval_pairs), 256, False, max_tokens=cfg.max_tokens)
    references = [t for _, t in eval_pairs]
    first = next(iter(eval_loader))  # a fixed held-out example; the training order stays untouched
    return RunData(
        tokenizer=tokenizer,
        train_loader=train_loader,
        evaluate=partial(
            evaluate, loader=eval_loader, tokenizer=tokenizer, references=references, cfg=cfg, device=device
        ),
        debug_example=first_example(first, tokenizer.pad_id),
        probe=next(iter(make_loader(dataset(eval_pairs[:8]), 8, False))),
        description=f"{len(train_pairs)} train / {len(eval_pairs)} eval examples",
        rounds=cfg.epochs,
        report=lambda out: report_data(cfg, out, train_loader),
        eval_pairs=eval_pairs,
    )


def lm_data(cfg: RunConfig, world: World, device: torch.device) -> RunData:
    """A language model on --data_file: random windows to train on, the whole validation split to score."""
    from utils.data.lm import LMBatches, load_text_corpus, unigram_entropy, validation_batches

    corpus = load_text_corpus(cfg.data_file, cfg.val_file, cfg.tokenizer, cfg.vocab_size, cfg.context_length)
    rounds = math.ceil(cfg.max_steps / cfg.eval_every)
    accum = cfg.gradient_accumulation_steps  # batches per optimizer step: a round is eval_every steps
    loader = LMBatches(corpus.train_ids, cfg.batch_size, cfg.context_length, cfg.eval_every * accum, cfg.seed,
                       world.rank, world.size)  # fmt: skip
    first = next(validation_batches(corpus.val_ids, cfg.context_length, 8))
    short = min(24, cfg.context_length)  # the figures and the trace read a window of a readable length
    probe = {key: value[:, :short] if key != "src" else value for key, value in first.items()}
    entropy = unigram_entropy(corpus.train_ids)
    data = {"train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids),
            "train_chars": corpus.train_chars, "val_chars": corpus.val_chars, "vocab_size": corpus.vocab_size,
            "tokenizer": cfg.tokenizer, "unigram_entropy": entropy}  # fmt: skip

    def report(out: Path) -> dict:
        logger.info("language model on %s: %s train / %s validation tokens (%s), vocabulary %d; a model "
                    "that ignores context scores the unigram entropy, %.3f nats per token",
                    cfg.data_file, f"{data['train_tokens']:,}", f"{data['val_tokens']:,}", cfg.tokenizer,
                    corpus.vocab_size, entropy)  # fmt: skip
        return {"data": data}

    return RunData(
        tokenizer=corpus.tokenizer,
        train_loader=loader,
        evaluate=partial(evaluate_lm, corpus=corpus, cfg=cfg, device=device),
        debug_example=(probe["src"][:1], probe["tgt_in"][:1, :12]),
        probe=probe,
        description=f"{data['train_tokens']:,} train / {data['val_tokens']:,} validation tokens, "
        f"{cfg.max_steps} steps in {rounds} rounds of {cfg.eval_every}",
        rounds=rounds,
        report=report,
        steps_in_round=partial(batches_in_round, cfg),
    )
