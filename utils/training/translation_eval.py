"""Translating a whole file and scoring it: `--evaluate --checkpoint PATH --test_prefix PREFIX`.

Works with either version: the caller passes a `translate(texts) -> outputs` function
(pytorch_version.inference.translate or huggingface_version.inference.translate_hf with the
model bound). Writes, next to the checkpoint (inside it for a results_huggingface folder),
`{basename(PREFIX)}.hyp.txt` (one output per input line) and `{basename(PREFIX)}.test_metrics.json`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from utils.data.corpus import read_parallel
from utils.runtime.resilience import atomic_write_json
from utils.training.metrics import translation_scores

logger = logging.getLogger(__name__)

Translate = Callable[[list[str]], list[str]]


def translate_sorted(translate: Translate, texts: list[str], batch_sentences: int = 128) -> list[str]:
    """`translate` over batches of similar-length texts (less padding), outputs in input order.

    Empty texts are not sent to the model; their output is empty.
    """
    order = sorted((i for i, t in enumerate(texts) if t), key=lambda i: len(texts[i]))
    outputs = [""] * len(texts)
    for start in range(0, len(order), batch_sentences):
        chunk = order[start : start + batch_sentences]
        for i, output in zip(chunk, translate([texts[i] for i in chunk])):
            outputs[i] = output
    return outputs


def results_folder(checkpoint: str | Path) -> Path:
    """Where --evaluate writes: next to a .pt file, inside a save_pretrained folder."""
    checkpoint = Path(checkpoint)
    return checkpoint if checkpoint.is_dir() else checkpoint.parent


def evaluate_test_set(
    translate: Translate,
    checkpoint: str | Path,
    test_prefix: str,
    src_lang: str,
    tgt_lang: str,
    decoding: dict,
    batch_sentences: int = 128,
) -> dict:
    """Translate PREFIX.{src_lang}, score against PREFIX.{tgt_lang}, write hypotheses and metrics.

    Every line is kept (an empty source gets an empty output), so line i of the hypothesis
    file answers line i of the source file and other tools can score it too.
    """
    src_path, ref_path = Path(f"{test_prefix}.{src_lang}"), Path(f"{test_prefix}.{tgt_lang}")
    pairs = read_parallel(src_path, ref_path, drop_empty=False)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    start = time.perf_counter()
    hypotheses = translate_sorted(translate, sources, batch_sentences)
    seconds = time.perf_counter() - start
    scores = translation_scores(hypotheses, references)
    folder = results_folder(checkpoint)
    hyp_path = folder / f"{Path(test_prefix).name}.hyp.txt"
    hyp_path.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    metrics = {
        "checkpoint": str(checkpoint),
        "source": str(src_path),
        "reference": str(ref_path),
        "sentences": len(pairs),
        **scores,
        "decoding": decoding,
        "translate_seconds": round(seconds, 1),
        "hypotheses": str(hyp_path),
        # one file of scores per test set, as of hypotheses: a second --test_prefix keeps the first's
        "scores": str(folder / f"{Path(test_prefix).name}.test_metrics.json"),
    }
    atomic_write_json(Path(metrics["scores"]), metrics)
    logger.info("%s: %s", src_path, scores["bleu_details"])
    return metrics


def format_scores(metrics: dict) -> str:
    """The console summary of `evaluate_test_set`'s result."""
    sig = metrics["signatures"]
    return "\n".join(
        [
            f"{metrics['source']}: {metrics['sentences']} sentences in {metrics['translate_seconds']}s",
            f"BLEU            {metrics['bleu']:6.2f}   {sig['bleu']}",
            f"BLEU lowercased {metrics['lowercase_bleu']:6.2f}   {sig['lowercase_bleu']}",
            f"chrF            {metrics['chrf']:6.2f}   {sig['chrf']}",
            f"hypotheses: {metrics['hypotheses']}",
            f"scores:     {metrics['scores']}",
        ]
    )
