"""Does a checkpoint fit the flags? The settings a resumed run must share with the run it continues,
the architecture flags a loaded checkpoint must not contradict, and one-line descriptions of what differs.
"""

from __future__ import annotations

from typing import Any

from utils.runtime.config import TOY_TASKS, ModelConfig, ModelShape, RunConfig

# What a resumed run must share with the run it continues: these shape the data, the model or the
# recipe (epochs may grow; where and how verbosely it runs may change).
RESUME_FIELDS = ("task", "seed", "train_size", "eval_size", "min_len", "max_len", "data_dir", "src_lang",
                 "tgt_lang", "max_train_lines", "vocab_size", "separate_vocab", "max_tokens", "data_file",
                 "val_file", "tokenizer", "context_length", "eval_every", *ModelShape.names(), "batch_size",
                 "gradient_accumulation_steps", "lr_factor", "warmup_steps", "lr_schedule", "learning_rate",
                 "weight_decay", "label_smoothing", "clip_grad_norm", "precision")  # fmt: skip
# the flags a loaded checkpoint must not contradict: those that shape its weights
ARCHITECTURE_FIELDS = tuple(ModelShape.names(training_only=False))


def describe_differences(saved: dict[str, Any], wanted: dict[str, Any], names=None) -> str:
    """'hidden_size: checkpoint 32, flags 64; ...' for each name whose values differ ('' if none)."""
    names = wanted.keys() if names is None else names
    return "; ".join(
        f"{n}: checkpoint {saved.get(n)!r}, flags {wanted.get(n)!r}"
        for n in names
        if n in wanted and saved.get(n) != wanted[n]
    )


def resume_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The RESUME_FIELDS a resumed run's flags (`wanted`) change; --precision auto goes on with the
    precision the saved run chose (utils.runtime.precision)."""
    if wanted.get("precision") == "auto" and "precision" in saved:
        wanted = {**wanted, "precision": saved["precision"]}
    return describe_differences(saved, wanted, [n for n in RESUME_FIELDS if n in saved and n in wanted])


def mismatched_flags(cfg: RunConfig, given, model_config: ModelConfig) -> str:
    """Architecture flags the user gave explicitly (`given`) that a loaded checkpoint contradicts."""
    wanted = {n: getattr(cfg, n) for n in ARCHITECTURE_FIELDS if n in given}
    if "task" in given and cfg.task in TOY_TASKS:
        from utils.data.tasks import tokenizer_for_task  # toy tasks only: translation vocabularies are learnt

        wanted["src_vocab_size"] = tokenizer_for_task(cfg.task).vocab_size
    return describe_differences(model_config.to_dict(), wanted)
