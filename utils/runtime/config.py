"""One source of defaults: the model's shape and the run's settings as dataclasses.

`main.py` builds its argparse flags from `RunConfig`'s fields (the help text is each
field's `metadata["help"]`), a YAML file given with `--config` uses the same keys, and
both implementations read the architecture from `ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from utils.observe.trace_printer import parse_selection

TOY_TASKS = ("copy", "reversal", "addition")
TASKS = (*TOY_TASKS, "translation")
VERSIONS = ("pytorch", "huggingface", "both", "analysis", "test")
DEVICES = ("auto", "cpu", "cuda", "mps")


class UserError(ValueError):
    """A user-facing configuration mistake; the CLI prints its message on one line."""


@dataclass
class ModelConfig:
    """The architecture of the encoder-decoder Transformer (paper, section 3)."""

    src_vocab_size: int  # size of the source token set
    tgt_vocab_size: int  # size of the target token set
    hidden_size: int = 128  # d_model; the paper's base model uses 512
    num_layers: int = 2  # N, for the encoder and for the decoder; the paper uses 6
    num_heads: int = 4  # h; each head works in d_k = d_model / h dimensions
    ffn_size: int = 512  # d_ff, the inner size of the position-wise FFN (paper: 4 x d_model)
    dropout: float = 0.1  # P_drop on sublayer outputs and embeddings (section 5.4)
    attention_dropout: float = 0.0  # on attention weights: not in the paper (tensor2tensor adds it)
    max_position: int = 256  # longest sequence the sinusoidal table covers
    norm_first: bool = False  # False: post-LN as in the paper. True: pre-LN, steadier when deep
    tie_output: bool = True  # share the target embedding with the pre-softmax linear (section 3.4)
    share_embeddings: bool = False  # also share source and target embeddings (needs one vocabulary)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "hidden_size", "num_layers"):
            _require_positive(name, getattr(self, name))
        for name in ("num_heads", "ffn_size", "max_position"):
            _require_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size must be divisible by num_heads, got hidden_size={self.hidden_size} "
                f"and num_heads={self.num_heads}"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError(
                "share_embeddings needs one vocabulary, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit choice must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was requested but Apple MPS is not available; use --device cpu")
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    return torch.device(name)


def check_precision(cfg: RunConfig, device: torch.device) -> None:
    """--fp16 needs CUDA (float16 training needs loss scaling, which only the Trainer does here)."""
    if cfg.fp16 and device.type != "cuda":
        raise UserError(f"--fp16 needs a CUDA GPU; this run is on the {device.type} (drop it, or try --bf16)")
    if cfg.fp16 and cfg.version != "huggingface":
        raise UserError("--fp16 is for --version huggingface; pytorch_version has --bf16 (no loss scaling)")


def _require_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class RunConfig:
    """Everything one run needs; each field is also a command-line flag of main.py."""

    # what to run
    version: str = _opt("pytorch", "which implementation to run", choices=VERSIONS)
    task: str = _opt("reversal", "what to learn: a toy task, or translation of --data_dir", choices=TASKS)
    seed: int = _opt(42, "random seed for data generation, initialisation and batching")
    device: str = _opt("auto", "where to compute; auto picks cuda, then mps, then cpu", choices=DEVICES)
    output_dir: str = _opt(".", "parent folder of results_pytorch/ and results_huggingface/")
    # data
    train_size: int = _opt(20000, "training examples of a toy task (translation: the files decide)")
    eval_size: int = _opt(500, "held-out toy examples, no source also in train (translation: val files)")
    min_len: int = _opt(3, "shortest toy string (copy, reversal)")
    max_len: int = _opt(16, "longest toy string (copy, reversal)")
    data_dir: str = _opt("", "translation: folder with train.SRC/.TGT and val.SRC/.TGT, a sentence a line")
    src_lang: str = _opt("de", "translation: source language, the suffix of the source files")
    tgt_lang: str = _opt("en", "translation: target language, the suffix of the target files")
    max_train_lines: int = _opt(0, "translation: use only the first N training pairs (0: all)")
    vocab_size: int = _opt(8000, "translation: BPE vocabulary size (per language with --separate_vocab)")
    separate_vocab: bool = _opt(False, "translation: one BPE vocabulary per language instead of a shared one")
    max_tokens: int = _opt(0, "batch by length: up to N padded tokens a batch, per process (0: --batch_size)")
    # model
    hidden_size: int = _opt(128, "d_model, the width of every token vector")
    num_layers: int = _opt(2, "encoder layers and decoder layers (N in the paper)")
    num_heads: int = _opt(4, "attention heads (h); must divide hidden_size")
    ffn_size: int = _opt(512, "inner size of the position-wise feed-forward network (d_ff)")
    dropout: float = _opt(0.1, "dropout on sublayer outputs and embeddings (paper: 0.1)",
                          task_defaults={"addition": 0.0})  # fmt: skip
    attention_dropout: float = _opt(0.0, "dropout on attention weights (not in the paper)")
    norm_first: bool = _opt(False, "pre-LN instead of the paper's post-LN")
    tie_output: bool = _opt(True, "tie the output projection to the target embedding")
    # training
    epochs: int = _opt(6, "passes over the training set")
    batch_size: int = _opt(64, "examples per batch (per process)")
    gradient_accumulation_steps: int = _opt(1, "batches whose gradients add up to one optimizer step")
    lr_factor: float = _opt(0.5, "Noam scale (paper: 1): lr = factor * d^-0.5 * min(s^-0.5, s*w^-1.5)",
                            task_defaults={"addition": 0.25})  # fmt: skip
    warmup_steps: int = _opt(400, "optimizer steps of linear learning-rate warm-up (paper: 4000)")
    label_smoothing: float = _opt(0.1, "label smoothing epsilon (paper section 5.4)")
    clip_grad_norm: float = _opt(1.0, "clip the gradient norm to this value; 0 turns clipping off")
    dataloader_num_workers: int = _opt(0, "worker processes for the DataLoader")
    stop_at_exact_match: float = _opt(0.0, "stop once held-out exact match reaches this (0: run all epochs)")
    time_budget_minutes: float = _opt(0.0, "don't start an epoch that would end past N minutes (0: no limit)")
    checkpoint_average: int = _opt(
        3, "the final model: the mean of the last N epochs' weights (paper 6.1; 0: off)"
    )
    max_nonfinite_steps: int = _opt(5, "a NaN/inf loss skips its step; this many in a row stop (0: never)")
    fp16: bool = _opt(False, "float16 mixed precision (needs a CUDA GPU; --version huggingface)")
    bf16: bool = _opt(False, "bfloat16 mixed precision (a recent GPU, or the CPU where torch supports it)")
    resume: str = _opt("", "go on with a stopped run: a .pt checkpoint (HF: checkpoint-N/) or 'auto'")
    parallel_halves: bool = _opt(
        True, "--version both on a CPU: train the two halves at once, half the threads each"
    )
    dist_timeout: int = _opt(1800, "torchrun: seconds a process waits for the others before failing")
    # decoding and inference
    checkpoint: str = _opt("", "a .pt file or HF results folder, for --source, --interactive or --evaluate")
    source: str = _opt("", "one input to decode with --checkpoint")
    interactive: bool = _opt(False, "read inputs line by line from stdin and decode each")
    beam_size: int = _opt(1, "1: greedy decoding; >1: beam search with this many beams")
    length_penalty: float = _opt(0.6, "beam search length penalty alpha (Wu et al. 2016)")
    max_length: int = _opt(0, "longest output in tokens when decoding; 0: source length + 10")
    evaluate: bool = _opt(False, "translate --test_prefix with --checkpoint and score it (BLEU, chrF)")
    test_prefix: str = _opt("", "--evaluate: PREFIX.SRC is translated and scored against PREFIX.TGT")
    # watching it work
    debug: bool = _opt(False, "print a step-by-step trace of the forward pass (first batch, --source)")
    debug_layers: str = _opt("all", "layers shown by --debug: 'all' or a list such as '0,1'")
    debug_heads: str = _opt("0", "heads whose attention matrix --debug prints: 'all' or '0,2'")
    visualize: bool = _opt(False, "write attention heatmaps and analysis figures")
    track_internals: bool = _opt(False, "record attention and Q/K/V statistics during training")
    track_every: int = _opt(50, "optimizer steps between two --track_internals snapshots")
    wandb: bool = _opt(False, "log to Weights & Biases (offline unless logged in)")
    wandb_project: str = _opt("transformer-tutorial", "Weights & Biases project name")
    quiet: bool = _opt(False, "hide progress bars")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "train_size", "eval_size",
                     "dist_timeout"):  # fmt: skip
            _require_positive(name, getattr(self, name))
        for name in ("hidden_size", "num_layers", "num_heads", "ffn_size", "beam_size", "warmup_steps",
                     "track_every"):  # fmt: skip
            _require_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size must be divisible by num_heads, got hidden_size={self.hidden_size} "
                f"and num_heads={self.num_heads}"
            )
        if not 1 <= self.min_len <= self.max_len:
            raise UserError(f"need 1 <= min_len <= max_len, got {self.min_len} and {self.max_len}")
        if self.max_length < 0 or self.dataloader_num_workers < 0:
            raise UserError("max_length and dataloader_num_workers must be >= 0")
        try:
            parse_selection(self.debug_layers, self.num_layers, "layers")
            parse_selection(self.debug_heads, self.num_heads, "heads")
        except ValueError as err:
            raise UserError(str(err)) from err
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_nonfinite_steps < 0:
            raise UserError(f"max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}")
        for name in ("dropout", "attention_dropout"):  # checked here too, before any data is made
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.fp16 and self.bf16:
            raise UserError("--fp16 and --bf16 exclude each other; choose one")
        if self.resume and (self.checkpoint or self.version not in ("pytorch", "huggingface")):
            raise UserError("--resume continues training: use it with --version pytorch or huggingface, "
                            "without --checkpoint")  # fmt: skip
        from utils.runtime.validation import check_translation_flags  # imports UserError from here

        check_translation_flags(self)

    @property
    def share_embeddings(self) -> bool:
        """Translation with one vocabulary shares the source and target embeddings (section 3.4)."""
        return self.task == "translation" and not self.separate_vocab

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int, **ids: int) -> ModelConfig:
        return ModelConfig(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            ffn_size=self.ffn_size,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            norm_first=self.norm_first,
            tie_output=self.tie_output,
            share_embeddings=self.share_embeddings,
            **ids,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a plain mapping (flags, a YAML file), rejecting unknown keys and wrong types.
        A setting not in it takes its task's own default where it has one (`task_defaults`)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(unknown)}")
        task = data.get("task", fields["task"].default)
        for name, f in fields.items():  # a default of its own for the task, unless given
            if name not in data and task in f.metadata.get("task_defaults", {}):
                data = {**data, name: f.metadata["task_defaults"][task]}
        for key, value in data.items():
            expected = type(fields[key].default)
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise UserError(f"config key {key} expects {expected.__name__}, got {value!r}")
        return cls(**data)
