"""--evaluate: score a checkpoint on a held-out test set (BLEU, chrF), as a paper reports it.

Training picks its best epoch on the validation files; the test files are read only here, once the
model is chosen, so the reported score was never used to choose anything.
"""

from __future__ import annotations

from functools import partial

from commands.checkpoints import load_checkpoint_for_decoding
from utils.runtime.config import RunConfig, resolve_device


def evaluate_with_checkpoint(cfg: RunConfig) -> int:
    """--evaluate: translate PREFIX.src_lang with the checkpoint (a .pt file or a results_huggingface
    folder), score it against PREFIX.tgt_lang, write the hypotheses and the scores ({name of
    PREFIX}.test_metrics.json) next to it."""
    from utils.training.translation_eval import evaluate_test_set, format_scores

    loaded = load_checkpoint_for_decoding(
        cfg.checkpoint, resolve_device(cfg.device), cfg.fast, cfg.trust_remote_code
    )
    decoding = dict(beam_size=cfg.beam_size, alpha=cfg.length_penalty, max_length=cfg.max_length)
    batch = partial(loaded.translate, loaded.model, loaded.tokenizer, **decoding)
    metrics = evaluate_test_set(batch, cfg.checkpoint, cfg.test_prefix, cfg.src_lang, cfg.tgt_lang, decoding)
    print(format_scores(metrics))
    return 0
