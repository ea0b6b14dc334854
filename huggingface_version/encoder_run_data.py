"""What an encoder-only Hugging Face run reads: pytorch_version's data, in the Trainer's dict layout.

The data is built by pytorch_version/encoder_data.py itself (the same builders, the same seed), so the
two versions read the same examples in the same order, and a masked LM the same masking
(utils/data/masking.py); only the layout changes, batch by batch:

    pair layout (utils.data)                     the model's inputs (transformers' names)
    src (B, S) ids, tgt_out (B,) classes         input_ids, attention_mask (src != PAD), labels
    src (B, 1, 8, 8) images, tgt_out (B,)        pixel_values, labels
    src (B, S) masked ids, tgt_out (B, S)        input_ids, attention_mask, labels: the original id where a
                                                 token was chosen, -100 elsewhere (PAD in tgt_out)

A classification's training set is pytorch_version's dataset itself (`EncoderExamples` hands the Trainer
its items, `collate_encoder` batches them as utils.data.classify.collate_classes does, padding included);
a masked LM's batches are the very MLMBatches pytorch_version trains on, one round per pass
(run_data.LMRounds). Scoring is pytorch_version.evaluate_encoder's, which reads either version's model:
the held-out accuracy, or the masked tokens' loss, accuracy and perplexity.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from huggingface_version.run_data import HFRunData, LMRounds
from utils.data.classify import collate_classes
from utils.data.tokenizer import PAD_ID
from utils.runtime.config import CLASSIFY_TASKS, RunConfig, UserError
from utils.runtime.distributed import World


def hf_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of the pair layout -> the model's inputs and labels (-100: no label, transformers' way)."""
    src, labels = batch["src"], batch["tgt_out"]
    if src.dtype.is_floating_point:  # images
        return {"pixel_values": src, "labels": labels}
    if labels.dim() == 2:  # a masked LM: PAD marks the tokens that were not chosen
        labels = labels.masked_fill(labels == PAD_ID, -100)
    return {"input_ids": src, "attention_mask": (src != PAD_ID).long(), "labels": labels}


def collate_encoder(items: list[tuple]) -> dict[str, torch.Tensor]:
    """(input, class) items -> one batch of model inputs, padded exactly as pytorch_version pads them."""
    return hf_inputs(collate_classes(items))


class EncoderExamples(Dataset):
    """pytorch_version's classification dataset (text or images) as the Trainer's train_dataset: the same
    items; `collate_encoder` makes the batches."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]


def _fast_tokenizer(cfg: RunConfig, tokenizer):
    """What is saved beside the model: a BERT's fast tokenizer, a ViT's image processor."""
    if cfg.arch == "vit":
        from huggingface_version.image_processing_encoder import TutorialGreyImageProcessor
        from utils.data.digits import GREY_LEVELS

        return TutorialGreyImageProcessor(image_size=tokenizer.image_size, grey_levels=GREY_LEVELS)
    from huggingface_version.tokenization import encoder_tokenizer_fast

    return encoder_tokenizer_fast(tokenizer)


def check_encoder_flags(cfg: RunConfig) -> None:
    """What the Hugging Face version of an encoder-only run refuses, before anything is written."""
    if cfg.init_from:
        raise UserError("--init_from (a classifier on a --task mlm checkpoint's encoder) is for --version "
                        "pytorch; the Hugging Face version trains its classifier from scratch")  # fmt: skip


def encoder_data(cfg: RunConfig, rank: int = 0, world_size: int = 1, device=None) -> HFRunData:
    """A classification, the digits or a masked LM, from pytorch_version.encoder_data's builders."""
    from pytorch_version import encoder_data as pytorch_data

    check_encoder_flags(cfg)
    world, device = World(rank, world_size), device or torch.device("cpu")
    if cfg.task == "mlm":
        data = pytorch_data.mlm_data(cfg, world, device)
    elif cfg.task == "digits":
        data = pytorch_data.digits_data(cfg, world, device)
    elif cfg.task in CLASSIFY_TASKS:
        data = pytorch_data.classification_data(cfg, world, device)
    else:
        raise UserError(f"--arch {cfg.arch} has no task {cfg.task!r}")
    probe = data.probe
    if cfg.task == "mlm":
        train = LMRounds(data.train_loader, example=hf_inputs)  # MLMBatches: the masked windows
        lengths_note = f"{math.ceil(cfg.max_steps / cfg.eval_every)} rounds"
    else:
        train = EncoderExamples(data.train_loader.dataset)
        lengths_note = f"{cfg.epochs} epochs"
    probe_inputs = hf_inputs(probe)  # the Trainer wants an eval_dataset; `evaluate` reads its own loader
    eval_rows = [{k: v[i] for k, v in probe_inputs.items()} for i in range(len(probe["src"]))]
    return HFRunData(
        data_tokenizer=data.tokenizer,
        tokenizer=_fast_tokenizer(cfg, data.tokenizer),
        train_dataset=train,
        eval_dataset=eval_rows,
        probe=probe,
        debug_example=data.debug_example,
        description=f"{data.description} ({lengths_note})",
        report=data.report(None),
        evaluate=data.evaluate,
        model_fields=data.model_fields,
        finish=data.finish,
        collator=collate_encoder,
    )
