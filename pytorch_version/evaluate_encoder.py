"""Held-out evaluation of the encoder-only models: a classifier's accuracy, a masked LM's guesses.

    classification (text or images)   loss, accuracy, and the confusion matrix of the whole set
    masked LM                         loss over the masked tokens (nats), their accuracy, perplexity

Both versions' models are scored here (`logits_of` asks either one for its logits), so a
comparison of the two reads the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def logits_of(model, src: torch.Tensor) -> torch.Tensor:
    """Either version's encoder-only logits: (B, C) of a classifier, (B, S, V) of a masked LM."""
    if hasattr(model, "run_with_cache"):  # pytorch_version: padding comes from the pad id
        return model(src)
    if src.dtype.is_floating_point:  # an HF image classifier
        return model(pixel_values=src).logits
    return model(input_ids=src, attention_mask=(src != model.config.pad_token_id).long()).logits


@torch.no_grad()
def classify_all(model, loader, device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(predictions, labels, summed loss) over every example of `loader`, in its order."""
    model.eval()
    predicted, labels, loss = [], [], 0.0
    for batch in loader:
        logits = logits_of(model, batch["src"].to(device)).float()
        target = batch["tgt_out"].to(device)
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        predicted.append(logits.argmax(-1).cpu())
        labels.append(target.cpu())
    return torch.cat(predicted), torch.cat(labels), loss


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> list[list[int]]:
    """counts[true][predicted]."""
    counts = torch.zeros(num_labels, num_labels, dtype=torch.long)
    counts.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return counts.tolist()


def evaluate_classification(model, loader, label_names, device, describe=None) -> dict:
    """Loss and accuracy on the held-out set; "eval_examples": the first few, "text -> guess (truth)"."""
    predicted, labels, loss = classify_all(model, loader, device)
    examples = []
    if describe is not None:
        for i in range(min(3, len(labels))):
            guess, truth = label_names[int(predicted[i])], label_names[int(labels[i])]
            examples.append(f"{describe(i)} -> {guess} ({'right' if guess == truth else 'truth: ' + truth})")
    return {
        "eval_loss": loss / max(len(labels), 1),
        "eval_accuracy": float((predicted == labels).float().mean()) if len(labels) else 0.0,
        "eval_examples": examples,
    }


@torch.no_grad()
def evaluate_masked_lm(model, batches, tokenizer, device) -> dict:
    """The masked tokens of the (fixed) validation masking: loss in nats per masked token, accuracy,
    perplexity; and one window as the model fills it in."""
    model.eval()
    total, correct, counted, example = 0.0, 0, 0, ""
    for batch in batches:
        src, labels = batch["src"].to(device), batch["tgt_out"].to(device)
        logits = logits_of(model, src).float()
        chosen = labels != tokenizer.pad_id
        total += F.cross_entropy(logits[chosen], labels[chosen], reduction="sum").item()
        correct += int((logits[chosen].argmax(-1) == labels[chosen]).sum())
        counted += int(chosen.sum())
        if not example:
            example = describe_fill(src[0], logits[0].argmax(-1), labels[0], tokenizer)
    loss = total / max(counted, 1)
    return {
        "eval_loss": loss,  # nats per masked token
        "eval_masked_accuracy": correct / max(counted, 1),
        "eval_perplexity": math.exp(min(loss, 50.0)),
        "eval_examples": [example],
    }


def describe_fill(src: torch.Tensor, guesses: torch.Tensor, labels: torch.Tensor, tokenizer) -> str:
    """'to be [o|o] not' : each chosen position as [guess|truth], the rest as read."""
    out = []
    for token, guess, label in zip(src.tolist(), guesses.tolist(), labels.tolist()):
        if label != tokenizer.pad_id:
            out.append(f"[{tokenizer.id_to_token[guess]}|{tokenizer.id_to_token[label]}]")
        elif token >= len(tokenizer.specials):
            out.append(tokenizer.id_to_token[token])
    return "".join(out)
