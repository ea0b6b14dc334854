"""Scores for sequence-to-sequence outputs: token accuracy, exact match, and BLEU/chrF for translation."""

from __future__ import annotations

import torch


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> tuple[int, int]:
    """Teacher-forced next-token accuracy: (correct, counted) over non-PAD target positions."""
    real = targets != pad_id
    correct = (logits.argmax(dim=-1) == targets) & real
    return int(correct.sum()), int(real.sum())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of outputs equal to their reference, character for character."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def translation_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF with sacrebleu, and lowercased BLEU for comparing with published numbers.

    `bleu`: cased, sacrebleu's default 13a tokenisation (the WMT convention; the signature
    says exactly how it was computed). `lowercase_bleu`: the same on lowercased text, closer
    to the tokenised, lowercased BLEU that many Multi30k papers and tutorials report (still
    not identical: they tokenise with spaCy or Moses first). `chrf`: character n-gram
    F-score, which rewards half-right word forms BLEU scores as wrong. All on 0-100.
    """
    from sacrebleu.metrics import BLEU, CHRF  # imported here: the toy tasks do not need it

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu, lowercase_bleu, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    scores = {
        "bleu": bleu.corpus_score(hypotheses, [references]),
        "lowercase_bleu": lowercase_bleu.corpus_score(hypotheses, [references]),
        "chrf": chrf.corpus_score(hypotheses, [references]),
    }
    signatures = {"bleu": bleu, "lowercase_bleu": lowercase_bleu, "chrf": chrf}
    return {
        **{name: round(score.score, 2) for name, score in scores.items()},
        "bleu_details": str(scores["bleu"]),  # n-gram precisions, brevity penalty, lengths
        "signatures": {name: str(metric.get_signature()) for name, metric in signatures.items()},
    }
