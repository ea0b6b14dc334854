"""What an encoder-only run reads and how it is scored (pytorch_version/run_data.py's other half).

    palindrome, sorted,      generated strings and their classes (utils/data/classify.py); an epoch
    majority, brackets       is a pass over them; scored by held-out accuracy
    digits                   the 8x8 handwritten digits (utils/data/digits.py) for a ViT; likewise
    mlm                      a text's windows with tokens masked (utils/data/masking.py); a round is
                             --eval_every steps, as a language model's; scored by the masked loss

Each builder returns a RunData (pytorch_version.run_data), so the one training loop serves these
tasks as it serves the others; `model_fields` tells the model config what the data decided (the
classes, the [MASK] and [CLS] ids, the images' size).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pytorch_version.evaluate_encoder import evaluate_classification, evaluate_masked_lm
from utils.data.classify import ClassificationDataset, collate_classes
from utils.runtime.config import RunConfig
from utils.runtime.distributed import World, make_train_loader


def _loaders(cfg: RunConfig, world: World, train, held_out):
    train_loader = make_train_loader(train, cfg.batch_size, world, cfg.seed, cfg.dataloader_num_workers,
                                     collate=collate_classes)  # fmt: skip
    eval_loader = DataLoader(held_out, batch_size=256, shuffle=False, collate_fn=collate_classes)
    return train_loader, eval_loader


def _report(name: str, sizes: dict):
    return lambda out: {"data": {"task": name, **sizes}}


def classification_data(cfg: RunConfig, world: World, device: torch.device):
    """Generated strings to classify; with --init_from, in the vocabulary of the pre-trained checkpoint."""
    from utils.data.classify import LABELS, classification_tokenizer, make_classification_task

    train_examples, eval_examples = make_classification_task(
        cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len
    )
    tokenizer = pretrained_tokenizer(cfg.init_from) if cfg.init_from else classification_tokenizer(cfg.task)
    labels = LABELS[cfg.task]
    train = ClassificationDataset(train_examples, tokenizer, len(labels))
    held_out = ClassificationDataset(eval_examples, tokenizer, len(labels))
    return _classifier_data(
        cfg, world, device, tokenizer, train, held_out, labels, describe=lambda i: eval_examples[i][0],
        description=f"{len(train)} train / {len(held_out)} eval strings, classes {', '.join(labels)}",
        sizes={"train": len(train), "eval": len(held_out)}, fields=_text_fields(tokenizer, labels),
        debug_length=len(held_out.src[0]),
    )  # fmt: skip


def digits_data(cfg: RunConfig, world: World, device: torch.device):
    """The handwritten digits, cut into --patch_size patches by the ViT."""
    from utils.data.digits import (
        CHANNELS,
        IMAGE_SIZE,
        LABELS,
        ImageDataset,
        PatchTokenizer,
        load_digits_split,
    )

    (train_x, train_y), (test_x, test_y) = load_digits_split(cfg.seed)
    tokenizer = PatchTokenizer(IMAGE_SIZE, cfg.patch_size, CHANNELS)
    tokenizer.check(train_x, "--task digits")
    train = ImageDataset(train_x, train_y, shift=1, seed=cfg.seed)  # each read moves the digit by <= 1 pixel
    held_out = ImageDataset(test_x, test_y)
    return _classifier_data(
        cfg, world, device, tokenizer, train, held_out, LABELS, describe=lambda i: f"test image {i}",
        description=f"{len(train)} train / {len(held_out)} test images of 8x8, patches of {cfg.patch_size}",
        sizes={"train": len(train), "test": len(held_out)},
        fields={"labels": LABELS, "image_size": IMAGE_SIZE, "channels": CHANNELS},
    )  # fmt: skip


def _classifier_data(cfg, world, device, tokenizer, train, held_out, labels, describe, description, sizes,
                     fields, debug_length=None):  # fmt: skip
    """The RunData of a classifier (strings or images): held-out accuracy each epoch, the confusion
    matrix at the end; `debug_length` cuts the --debug example to its real tokens."""
    from pytorch_version.run_data import RunData

    train_loader, eval_loader = _loaders(cfg, world, train, held_out)
    probe = collate_classes([held_out[i] for i in range(min(8, len(held_out)))])
    return RunData(
        tokenizer=tokenizer,
        train_loader=train_loader,
        evaluate=partial(
            evaluate_classification, loader=eval_loader, label_names=labels, device=device, describe=describe
        ),
        debug_example=(
            probe["src"][:1, :debug_length] if debug_length else probe["src"][:1],
            probe["tgt_in"][:1],
        ),
        probe=probe,
        description=description,
        rounds=cfg.epochs,
        report=_report(cfg.task, sizes),
        model_fields=fields,
        finish=partial(finish_classifier, loader=eval_loader, labels=labels, device=device),
    )


def mlm_data(cfg: RunConfig, world: World, device: torch.device):
    """BERT's masked LM on --data_file: random masked windows to train on, the fixed-masked validation."""
    from pytorch_version.run_data import RunData, batches_in_round
    from utils.data.lm import load_text_corpus
    from utils.data.masking import MLMBatches, mlm_validation_batches
    from utils.data.tokenizer import ENCODER_SPECIALS

    window = cfg.context_length - 2  # [CLS] and [SEP] take two places
    corpus = load_text_corpus(
        cfg.data_file, cfg.val_file, "char", context_length=window, specials=ENCODER_SPECIALS
    )
    tokenizer = corpus.tokenizer
    accum = cfg.gradient_accumulation_steps
    loader = MLMBatches(corpus.train_ids, tokenizer, cfg.batch_size, window, cfg.eval_every * accum, cfg.seed,
                        world.rank, world.size)  # fmt: skip
    validation = partial(mlm_validation_batches, corpus.val_ids, tokenizer, window, 32, cfg.seed)
    probe = next(
        iter(mlm_validation_batches(corpus.val_ids[: 8 * window], tokenizer, min(window, 22), 8, cfg.seed))
    )
    rounds = math.ceil(cfg.max_steps / cfg.eval_every)
    sizes = {"train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids),
             "vocab_size": tokenizer.vocab_size}  # fmt: skip

    def report(out: Path) -> dict:
        return {"data": {"task": "mlm", **sizes}}

    def finish(model, out: Path) -> dict:
        """The masking the training batches had, measured, and its figure."""
        from utils.figures.encoder_figures import plot_masking

        counts = loader.counts.to_dict()
        plot_masking(counts, out / "masking_distribution.png")
        return {"masking": counts}

    return RunData(
        tokenizer=tokenizer,
        train_loader=loader,
        evaluate=lambda model: evaluate_masked_lm(model, validation(), tokenizer, device),
        debug_example=(probe["src"][:1], probe["tgt_in"][:1]),
        probe=probe,
        description=f"{sizes['train_tokens']:,} train / {sizes['val_tokens']:,} validation characters, "
        f"windows of {window}, {cfg.max_steps} steps in {rounds} rounds of {cfg.eval_every}",
        rounds=rounds,
        report=report,
        steps_in_round=partial(batches_in_round, cfg),
        model_fields=_text_fields(tokenizer, ()),
        finish=finish,
    )


def _text_fields(tokenizer, labels) -> dict:
    return {"labels": tuple(labels), "mask_id": tokenizer.mask_id, "cls_id": tokenizer.cls_id}


def pretrained_tokenizer(path: str):
    """The vocabulary of a --task mlm checkpoint (--init_from): the classifier must read with it."""
    from utils.data.tokenizer import tokenizer_from_dict
    from utils.runtime.checkpoint import load_checkpoint
    from utils.runtime.errors import UserError

    state = load_checkpoint(path)
    if state.get("model_config", {}).get("arch") != "bert" or state["model_config"].get("labels"):
        raise UserError(f"--init_from {path}: not a --task mlm checkpoint of --arch bert")
    return tokenizer_from_dict(state["tokenizer"])


def finish_classifier(model, out: Path, loader, labels, device) -> dict:
    """The final model's confusion matrix on the held-out set, as numbers and as a figure."""
    from pytorch_version.evaluate_encoder import classify_all, confusion_matrix
    from utils.figures.encoder_figures import plot_confusion

    predicted, truth, _ = classify_all(model, loader, device)
    counts = confusion_matrix(predicted, truth, len(labels))
    plot_confusion(counts, labels, out / "confusion_matrix.png")
    return {"confusion_matrix": {"labels": list(labels), "counts": counts}}


def from_pretrained_encoder(cfg: RunConfig, fields: dict):
    """A classifier whose embeddings and encoder are those of the --init_from masked LM (its shape and
    vocabulary too); only the classification head starts fresh."""
    import dataclasses
    import logging

    from pytorch_version.families import model_for
    from utils.runtime.checkpoint import load_checkpoint
    from utils.runtime.config import ModelConfig

    state = load_checkpoint(cfg.init_from)
    pretrained = ModelConfig.from_dict(state["model_config"])  # the shape and vocabulary stay
    config = dataclasses.replace(pretrained, **fields, dropout=cfg.dropout, pooling=cfg.pooling)
    model = model_for(config)
    weights = {k: v for k, v in state["model_state"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    logging.getLogger(__name__).info(
        "--init_from %s: embeddings and %d encoder layers pre-trained, the head new",
        cfg.init_from,
        config.num_layers,
    )
    return model
