"""Checks of RunConfig that would make utils/runtime/config.py too long to read: the translation flags."""

from __future__ import annotations

from utils.runtime.config import UserError


def check_translation_flags(cfg) -> None:
    """The translation flags: what is missing, and which flags do not go together."""
    for name in ("max_train_lines", "max_tokens", "checkpoint_average"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.time_budget_minutes < 0:
        raise UserError(f"time_budget_minutes must be >= 0, got {cfg.time_budget_minutes}")
    if cfg.vocab_size < 50:
        raise UserError(f"vocab_size must be at least 50 (specials + an alphabet), got {cfg.vocab_size}")
    for name in ("src_lang", "tgt_lang"):
        lang = getattr(cfg, name)
        if not lang or any(c in lang for c in "/\\. "):
            raise UserError(f"{name} must be a file suffix such as 'de', got {lang!r}")
    if cfg.src_lang == cfg.tgt_lang:
        raise UserError(f"src_lang and tgt_lang must differ, both are {cfg.src_lang!r}")
    if cfg.evaluate and not (cfg.checkpoint and cfg.test_prefix):
        raise UserError(
            "--evaluate needs --checkpoint PATH and --test_prefix PREFIX "
            f"(PREFIX.{cfg.src_lang} is translated, PREFIX.{cfg.tgt_lang} the reference)"
        )
    if cfg.test_prefix and not cfg.evaluate:
        raise UserError("--test_prefix is used by --evaluate; add --evaluate --checkpoint PATH")
    if cfg.evaluate and (cfg.source or cfg.interactive):
        raise UserError("--evaluate scores a test set; --source and --interactive decode single inputs")
    if cfg.task != "translation":
        for name in ("data_dir", "separate_vocab", "max_train_lines"):
            if getattr(cfg, name):
                raise UserError(f"--{name} applies to --task translation only")
        return
    if not cfg.data_dir and not cfg.checkpoint:
        raise UserError(
            f"--task translation needs --data_dir DIR, a folder with train.{cfg.src_lang}, "
            f"train.{cfg.tgt_lang}, val.{cfg.src_lang} and val.{cfg.tgt_lang}"
        )
    if cfg.version not in ("pytorch", "huggingface", "test"):
        raise UserError(f"translation needs --version pytorch or huggingface, not {cfg.version}")
    if cfg.separate_vocab and cfg.version == "huggingface":
        raise UserError("--separate_vocab needs --version pytorch: the HF version has one tokenizer")
    if cfg.stop_at_exact_match:
        raise UserError("--stop_at_exact_match is for the toy tasks; translation keeps the best BLEU")
