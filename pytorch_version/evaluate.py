"""Held-out evaluation of the from-scratch model: teacher-forced loss and accuracy, greedy exact match."""

from __future__ import annotations

import torch

from pytorch_version.decoding import generate
from utils.config import RunConfig
from utils.metrics import exact_match, token_accuracy
from utils.training import seq2seq_loss


def max_new_tokens(cfg: RunConfig, src: torch.Tensor) -> int:
    return cfg.max_length or src.size(1) + 10


@torch.no_grad()
def evaluate(model, loader, tokenizer, references, cfg: RunConfig, device) -> dict[str, float]:
    """Teacher-forced loss and token accuracy, and greedy exact match on the whole set."""
    model.eval()
    total_loss, correct, counted, predictions = 0.0, 0, 0, []
    for batch in loader:
        src, tgt_in, tgt_out = (batch[k].to(device) for k in ("src", "tgt_in", "tgt_out"))
        logits = model(src, tgt_in)
        total_loss += seq2seq_loss(logits, tgt_out, tokenizer.pad_id, 0.0).item() * src.size(0)
        c, n = token_accuracy(logits, tgt_out, tokenizer.pad_id)
        correct, counted = correct + c, counted + n
        outputs = generate(model, src, max_new_tokens(cfg, src))
        predictions += [tokenizer.decode(row) for row in outputs.tolist()]
    return {
        "eval_loss": total_loss / len(references),
        "eval_token_accuracy": correct / max(counted, 1),
        "eval_exact_match": exact_match(predictions, references),
        "eval_examples": predictions[:3],
    }
