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
TASKS = (*TOY_TASKS, "translation", "lm")
ARCHS = ("transformer", "gpt")  # the families: the paper's encoder-decoder, a decoder-only GPT
POSITIONS = ("sinusoidal", "learned", "rotary")
VERSIONS = ("pytorch", "huggingface", "both", "analysis", "test")
DEVICES = ("auto", "cpu", "cuda", "mps")


class UserError(ValueError):
    """A user-facing configuration mistake; the CLI prints its message on one line."""


def _require_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelShape:
    """The architecture's hyperparameters (paper, section 3): flags of main.py, fields of ModelConfig.

    The one place each is declared. RunConfig inherits them (so they are flags), ModelConfig adds
    the vocabularies and special ids; huggingface_version/configuration.py names them for
    Hugging Face. A field marked `training_only` shapes training, not the weights: a loaded
    checkpoint need not match it. `arch_defaults` give a family its own default (applied by
    RunConfig.from_dict when the setting is not given, as `task_defaults` are).
    """

    # the family: the paper's encoder-decoder, or a decoder-only GPT (its prompt and its output are
    # one sequence, read by one stack of masked self-attention layers)
    arch: str = _opt("transformer", "model family: the paper's encoder-decoder, or a decoder-only GPT",
                     choices=ARCHS)  # fmt: skip

    hidden_size: int = _opt(128, "d_model, the width of every token vector")  # the paper's base: 512
    num_layers: int = _opt(2, "encoder layers and decoder layers (N in the paper)")  # the paper: 6
    num_heads: int = _opt(4, "attention heads (h); must divide hidden_size")  # each works in d_k = D / h
    ffn_size: int = _opt(512, "inner size of the position-wise feed-forward network (d_ff)")  # paper: 4 D
    # P_drop on sublayer outputs and embeddings (section 5.4)
    dropout: float = _opt(0.1, "dropout on sublayer outputs and embeddings (paper: 0.1)",
                          task_defaults={"addition": 0.0}, training_only=True)  # fmt: skip
    # on attention weights: not in the paper (tensor2tensor adds it)
    attention_dropout: float = _opt(0.0, "dropout on attention weights (not in the paper)",
                                    training_only=True)  # fmt: skip
    # False: post-LN as in the paper. True: pre-LN (Xiong et al. 2020), steadier when deep; GPT-2's choice
    norm_first: bool = _opt(False, "pre-LN instead of the paper's post-LN", arch_defaults={"gpt": True})
    # where order comes from: the paper adds a sinusoidal table (section 3.5), GPT-2 learns one vector per
    # position, rotary (Su et al. 2021) turns each query and key by an angle that grows with its position,
    # so their dot product depends on the distance between them (gpt only)
    positions: str = _opt("sinusoidal", "position information: the paper's sinusoidal table, a learned one, "
                          "or rotary (RoPE; --arch gpt)", choices=POSITIONS,
                          arch_defaults={"gpt": "rotary"})  # fmt: skip
    # the FFN's nonlinearity: the paper's max(0, x); GPT uses GELU, x * Phi(x) (Hendrycks & Gimpel 2016)
    activation: str = _opt("relu", "FFN nonlinearity (gelu: --arch gpt)", choices=("relu", "gelu"),
                           arch_defaults={"gpt": "gelu"})  # fmt: skip
    # Xavier-uniform as the Annotated Transformer; GPT-2: N(0, 0.02), and the projections that write
    # into the residual stream scaled by 1/sqrt(2 N) so the stream's variance does not grow with depth
    init: str = _opt("xavier", "weight initialisation: xavier, or gpt2's N(0, 0.02) (--arch gpt)",
                     choices=("xavier", "gpt2"), arch_defaults={"gpt": "gpt2"})  # fmt: skip
    # share the target embedding with the pre-softmax linear (section 3.4)
    tie_output: bool = _opt(True, "tie the output projection to the target embedding")

    def __post_init__(self) -> None:
        """The checks of every architecture setting, with one-line errors: the only place they are made."""
        for name in ("hidden_size", "num_layers", "num_heads", "ffn_size"):
            _require_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size must be divisible by num_heads, got hidden_size={self.hidden_size} "
                f"and num_heads={self.num_heads}"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {value!r}")
        for f in dataclasses.fields(ModelShape):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}"
                )
        if self.arch == "transformer":  # the paper's choices: the other families' settings are theirs
            for name, paper in (("positions", "sinusoidal"), ("activation", "relu"), ("init", "xavier")):
                if getattr(self, name) != paper:
                    raise UserError(f"--{name} {getattr(self, name)} is for --arch gpt; the encoder-decoder "
                                    f"uses the paper's {paper}")  # fmt: skip
        if self.positions == "rotary" and self.hidden_size // self.num_heads % 2:
            width = self.hidden_size // self.num_heads
            raise UserError(f"rotary positions turn pairs of dimensions: the head width {width} "
                            "(hidden_size / num_heads) must be even")  # fmt: skip

    @classmethod
    def names(cls, training_only: bool | None = None) -> list[str]:
        """The field names; `training_only=False`: those that shape the weights; True: the others."""
        fields = dataclasses.fields(ModelShape)
        return [f.name for f in fields if training_only in (None, bool(f.metadata.get("training_only")))]

    def shape(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ModelShape.names()}


@dataclass
class ModelConfig(ModelShape):
    """The architecture of the encoder-decoder Transformer: its shape and its vocabularies."""

    src_vocab_size: int = field(kw_only=True)  # size of the source token set
    tgt_vocab_size: int = field(kw_only=True)  # size of the target token set
    max_position: int = field(default=256, kw_only=True)  # longest sequence the position table covers
    share_embeddings: bool = field(default=False, kw_only=True)  # also share src/tgt embeddings (one vocab)
    pad_id: int = field(default=0, kw_only=True)
    bos_id: int = field(default=1, kw_only=True)
    eos_id: int = field(default=2, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("src_vocab_size", "tgt_vocab_size", "max_position"):
            _require_positive(name, getattr(self, name))
        if self.arch == "gpt" and self.src_vocab_size != self.tgt_vocab_size:
            sizes = f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            raise UserError(f"a GPT reads and writes one vocabulary, got {sizes}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError(
                "share_embeddings needs one vocabulary, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.tgt_vocab_size:
                raise UserError(f"{name} must be an id in [0, {self.tgt_vocab_size}), got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        """The output vocabulary (a GPT's only one)."""
        return self.tgt_vocab_size

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


@dataclass
class RunConfig(ModelShape):
    """Everything one run needs; each field is also a command-line flag of main.py (the model's
    shape comes from ModelShape)."""

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
    data_file: str = _opt("", "lm: a UTF-8 text file; its first 90%% trains, the last 10%% validates")
    val_file: str = _opt("", "lm: a text file to validate on instead (then all of --data_file trains)")
    tokenizer: str = _opt("char", "lm: one token per character, or BPE subwords (--vocab_size of them)",
                          choices=("char", "bpe"))  # fmt: skip
    context_length: int = _opt(128, "lm: tokens a training window holds, the longest context the GPT sees")
    # training
    epochs: int = _opt(6, "passes over the training set (lm: --max_steps decides)")
    max_steps: int = _opt(0, "lm: optimizer steps to train (a corpus is one long stream, not epochs)",
                          task_defaults={"lm": 2000})  # fmt: skip
    eval_every: int = _opt(250, "lm: optimizer steps between two evaluations (validation loss, a sample)")
    batch_size: int = _opt(64, "examples per batch (per process)")
    gradient_accumulation_steps: int = _opt(1, "batches whose gradients add up to one optimizer step")
    lr_factor: float = _opt(0.5, "Noam scale (paper: 1): lr = factor * d^-0.5 * min(s^-0.5, s*w^-1.5)",
                            task_defaults={"addition": 0.25})  # fmt: skip
    warmup_steps: int = _opt(400, "optimizer steps of linear learning-rate warm-up (paper: 4000)",
                             task_defaults={"lm": 100})  # fmt: skip
    lr_schedule: str = _opt("noam", "noam: the paper's warm-up then 1/sqrt(step) (--lr_factor); cosine: "
                            "warm-up to --learning_rate, then a cosine decay to a tenth of it by --max_steps",
                            choices=("noam", "cosine"), task_defaults={"lm": "cosine"})  # fmt: skip
    learning_rate: float = _opt(2e-3, "peak learning rate of --lr_schedule cosine")
    weight_decay: float = _opt(0.0, "AdamW weight decay on the matrices (0: the paper's Adam)",
                               task_defaults={"lm": 0.1})  # fmt: skip
    label_smoothing: float = _opt(0.1, "label smoothing epsilon (paper section 5.4)",
                                  task_defaults={"lm": 0.0})  # fmt: skip
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
    prompt: str = _opt("", "--arch gpt: text the model continues (--checkpoint; longer than the context: "
                       "its last tokens are kept, with a warning)")  # fmt: skip
    max_new_tokens: int = _opt(
        200, "tokens --prompt generates (it stops early at EOS where the data has one)"
    )
    do_sample: bool = _opt(True, "--prompt samples the next token; --no-do_sample takes the most likely one")
    temperature: float = _opt(0.8, "sampling: divide the logits by this (< 1: surer, > 1: more varied)")
    top_k: int = _opt(0, "sampling: only from the k most likely tokens (0: all)")
    top_p: float = _opt(1.0, "sampling: only from the smallest set of tokens whose probability reaches p "
                        "(nucleus sampling, Holtzman et al. 2019; 1: all)")  # fmt: skip
    evaluate: bool = _opt(False, "translate --test_prefix with --checkpoint and score it (BLEU, chrF)")
    test_prefix: str = _opt("", "--evaluate: PREFIX.SRC is translated and scored against PREFIX.TGT")
    trust_remote_code: bool = _opt(False, "--checkpoint: also load an HF folder whose model's code is in the "
                                   "folder (it runs that code; only for folders you trust)")  # fmt: skip
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
    fast: bool = _opt(True, "the speed-ups of utils/fast/ (packed rows, fast dropout, ...); --no-fast trains "
                      "and decodes on the plain readable path")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()  # the model's shape
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "train_size", "eval_size",
                     "dist_timeout"):  # fmt: skip
            _require_positive(name, getattr(self, name))
        for name in ("beam_size", "warmup_steps", "track_every"):
            _require_positive(name, getattr(self, name))
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
        if self.fp16 and self.bf16:
            raise UserError("--fp16 and --bf16 exclude each other; choose one")
        if self.resume and (self.checkpoint or self.version not in ("pytorch", "huggingface")):
            raise UserError("--resume continues training: use it with --version pytorch or huggingface, "
                            "without --checkpoint")  # fmt: skip
        from utils.runtime.validation import check_family_flags, check_translation_flags  # need UserError

        check_translation_flags(self)
        check_family_flags(self)

    @classmethod
    def flags(cls) -> list[dataclasses.Field]:
        """The fields in the order of --help: the run's own, with the model's shape (inherited from
        ModelShape, so first among dataclass fields) where the model settings belong, before training."""
        shape = dataclasses.fields(ModelShape)
        own = [f for f in dataclasses.fields(cls) if f.name not in ModelShape.names()]
        at = next(i for i, f in enumerate(own) if f.name == "epochs")
        return [*own[:at], *shape, *own[at:]]

    @property
    def share_embeddings(self) -> bool:
        """Translation with one vocabulary shares the source and target embeddings (section 3.4)."""
        return self.task == "translation" and not self.separate_vocab

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int, **ids: int) -> ModelConfig:
        extra = {"max_position": self.context_length} if self.task == "lm" else {}  # a GPT's context
        return ModelConfig(**self.shape(), src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                           share_embeddings=self.share_embeddings, **ids, **extra)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a plain mapping (flags, a YAML file), rejecting unknown keys and wrong types.
        A setting not in it takes its task's or its family's own default where it has one
        (`task_defaults`, `arch_defaults`)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(unknown)}")
        task, arch = data.get("task", fields["task"].default), data.get("arch", fields["arch"].default)
        for name, f in fields.items():  # a default of its own for the task or the family, unless given
            for own, kind in ((task, "task_defaults"), (arch, "arch_defaults")):
                if name not in data and own in f.metadata.get(kind, {}):
                    data = {**data, name: f.metadata[kind][own]}
        for key, value in data.items():
            expected = type(fields[key].default)
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise UserError(f"config key {key} expects {expected.__name__}, got {value!r}")
        return cls(**data)
