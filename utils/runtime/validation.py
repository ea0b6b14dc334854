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


def _tasks_of(arch: str) -> tuple[str, ...]:
    from utils.runtime.config import CLASSIFY_TASKS, TOY_TASKS

    return {"transformer": (*TOY_TASKS, "translation"), "gpt": (*TOY_TASKS, "lm"),
            "bert": (*CLASSIFY_TASKS, "mlm"), "vit": ("digits",)}[arch]  # fmt: skip


def check_family_flags(cfg) -> None:
    """Which tasks each family learns, and which flags go with which task."""
    from utils.runtime.config import CLASSIFY_TASKS, STEP_TASKS

    if cfg.task not in _tasks_of(cfg.arch):
        owner = next(a for a in ("transformer", "gpt", "bert", "vit") if cfg.task in _tasks_of(a))
        raise UserError(f"--arch {cfg.arch} learns {', '.join(_tasks_of(cfg.arch))}; --task {cfg.task} "
                        f"is for --arch {owner}")  # fmt: skip
    if cfg.task in STEP_TASKS and not cfg.data_file and not cfg.checkpoint:
        raise UserError(f"--task {cfg.task} needs --data_file PATH, a UTF-8 text file to learn from")
    if cfg.task not in STEP_TASKS:
        for name in ("data_file", "val_file"):
            if getattr(cfg, name):
                raise UserError(f"--{name} applies to --task lm and mlm only")
    if cfg.tokenizer != "char" and cfg.task != "lm":
        raise UserError(
            "--tokenizer applies to --task lm (translation always learns BPE; mlm reads characters)"
        )
    if cfg.init_from and cfg.task not in CLASSIFY_TASKS:
        raise UserError(f"--init_from starts a classifier from a --task mlm checkpoint; use it with --task "
                        f"{' / '.join(CLASSIFY_TASKS)}")  # fmt: skip
    if cfg.task == "mlm" and cfg.context_length < 3:
        raise UserError(
            f"--task mlm needs context_length >= 3 ([CLS], a token, [SEP]), got {cfg.context_length}"
        )
    for name in ("context_length", "eval_every", "max_new_tokens"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if cfg.context_length < 2:
        raise UserError(f"context_length must be at least 2 (a token and the next), got {cfg.context_length}")
    if cfg.max_steps < 0:
        raise UserError(f"max_steps must be >= 0, got {cfg.max_steps}")
    if not cfg.temperature > 0:
        raise UserError(f"temperature must be > 0 (use --no-do_sample for the most likely token), "
                        f"got {cfg.temperature}")  # fmt: skip
    if not 0 < cfg.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.top_k < 0:
        raise UserError(f"top_k must be >= 0 (0: no limit), got {cfg.top_k}")
    if cfg.learning_rate <= 0 or cfg.weight_decay < 0:
        raise UserError(f"learning_rate must be > 0 and weight_decay >= 0, got {cfg.learning_rate} "
                        f"and {cfg.weight_decay}")  # fmt: skip
    if cfg.prompt and not cfg.checkpoint:
        raise UserError("--prompt needs --checkpoint PATH (a trained --arch gpt model)")
    if cfg.prompt and (cfg.source or cfg.evaluate):
        raise UserError("--prompt continues text; --source and --evaluate decode toy or translation inputs")
