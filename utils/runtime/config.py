"""One source of defaults: the model's shape and the run's settings as dataclasses.

`main.py` builds its argparse flags from `RunConfig`'s fields (the help text is each
field's `metadata["help"]`), a YAML file given with `--config` uses the same keys, and
both implementations read the architecture from `ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from utils.observe.trace_printer import parse_selection
from utils.runtime.errors import UserError
from utils.runtime.precision import PRECISIONS
from utils.runtime.shape import (
    ARCHS,
    CLASSIFY_TASKS,
    ENCODER_ONLY,
    POSITIONS,
    ModelConfig,
    ModelShape,
    require_positive,
    setting,
)

__all__ = [
    "ARCHS",
    "CLASSIFY_TASKS",
    "ENCODER_ONLY",
    "POSITIONS",
    "ModelConfig",
    "ModelShape",
    "RunConfig",
    "UserError",
]

TOY_TASKS = ("copy", "reversal", "addition")
TASKS = (*TOY_TASKS, "translation", "lm", *CLASSIFY_TASKS, "mlm", "digits")
STEP_TASKS = ("lm", "mlm")  # a corpus is one stream: paced by optimizer steps (--max_steps), not epochs
VERSIONS = ("pytorch", "huggingface", "both", "analysis", "test")
DEVICES = ("auto", "cpu", "cuda", "mps")


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


@dataclass
class RunConfig(ModelShape):
    """Everything one run needs; each field is also a command-line flag of main.py (the model's
    shape comes from ModelShape)."""

    # what to run
    version: str = setting("pytorch", "which implementation to run", choices=VERSIONS)
    task: str = setting("reversal", "what to learn: a toy task, translation of --data_dir, a language model "
                     "(lm: --arch gpt), a masked LM (mlm), a classification (--arch bert) or the digits "
                     "(--arch vit)", choices=TASKS,
                     arch_defaults={"bert": "palindrome", "vit": "digits"})  # fmt: skip
    seed: int = setting(42, "random seed for data generation, initialisation and batching")
    device: str = setting("auto", "where to compute; auto picks cuda, then mps, then cpu", choices=DEVICES)
    output_dir: str = setting(".", "parent folder of results_pytorch/ and results_huggingface/")
    # data
    train_size: int = setting(20000, "training examples of a toy task (translation: the files decide)")
    eval_size: int = setting(500, "held-out toy examples, no source also in train (translation: val files)")
    min_len: int = setting(3, "shortest toy string (copy, reversal)")
    max_len: int = setting(16, "longest toy string (copy, reversal)")
    data_dir: str = setting("", "translation: folder with train.SRC/.TGT and val.SRC/.TGT, a sentence a line")
    src_lang: str = setting("de", "translation: source language, the suffix of the source files")
    tgt_lang: str = setting("en", "translation: target language, the suffix of the target files")
    max_train_lines: int = setting(0, "translation: use only the first N training pairs (0: all)")
    vocab_size: int = setting(8000, "translation: BPE vocabulary size (per language with --separate_vocab)")
    separate_vocab: bool = setting(
        False, "translation: one BPE vocabulary per language instead of a shared one"
    )
    max_tokens: int = setting(
        0, "batch by length: up to N padded tokens a batch, per process (0: --batch_size)"
    )
    data_file: str = setting("", "lm, mlm: a UTF-8 text file; its first 90%% trains, the last 10%% validates")
    val_file: str = setting(
        "", "lm, mlm: a text file to validate on instead (then all of --data_file trains)"
    )
    tokenizer: str = setting("char", "lm: one token per character, or BPE subwords (--vocab_size of them)",
                          choices=("char", "bpe"))  # fmt: skip
    context_length: int = setting(128, "lm: tokens a training window holds, the longest context the GPT "
                               "sees; mlm: the window's length with [CLS] and [SEP]",
                               task_defaults={"mlm": 64})  # fmt: skip
    init_from: str = setting("", "classification: start the encoder from a --task mlm checkpoint (.pt), "
                          "to see what pre-training buys; its shape and vocabulary are kept")  # fmt: skip
    # training
    epochs: int = setting(6, "passes over the training set (lm, mlm: --max_steps decides)",
                       task_defaults={**dict.fromkeys(CLASSIFY_TASKS, 8), "digits": 30})  # fmt: skip
    max_steps: int = setting(0, "lm, mlm: optimizer steps to train (a corpus is one long stream, not "
                          "epochs)", task_defaults={"lm": 2000, "mlm": 2000})  # fmt: skip
    eval_every: int = setting(250, "lm, mlm: optimizer steps between two evaluations")
    batch_size: int = setting(64, "examples per batch (per process)", task_defaults={"digits": 32})
    gradient_accumulation_steps: int = setting(1, "batches whose gradients add up to one optimizer step")
    lr_factor: float = setting(0.5, "Noam scale (paper: 1): lr = factor * d^-0.5 * min(s^-0.5, s*w^-1.5)",
                            task_defaults={"addition": 0.25})  # fmt: skip
    warmup_steps: int = setting(400, "optimizer steps of linear learning-rate warm-up (paper: 4000)",
                             task_defaults={"lm": 100, "mlm": 100})  # fmt: skip
    lr_schedule: str = setting("noam", "noam: the paper's warm-up then 1/sqrt(step) (--lr_factor); cosine: "
                            "warm-up to --learning_rate, then a cosine decay to a tenth of it by --max_steps",
                            choices=("noam", "cosine"),
                            task_defaults={"lm": "cosine", "mlm": "cosine", "digits": "cosine",
                                           **dict.fromkeys(CLASSIFY_TASKS, "cosine")})  # fmt: skip
    learning_rate: float = setting(2e-3, "peak learning rate of --lr_schedule cosine",
                                task_defaults=dict.fromkeys((*CLASSIFY_TASKS, "digits"), 1e-3))  # fmt: skip
    weight_decay: float = setting(0.0, "AdamW weight decay on the matrices (0: the paper's Adam)",
                               task_defaults={"lm": 0.1, "mlm": 0.01})  # fmt: skip
    label_smoothing: float = setting(0.1, "label smoothing epsilon (paper section 5.4)",
                                  task_defaults={"lm": 0.0, "mlm": 0.0, "digits": 0.0,
                                                 **dict.fromkeys(CLASSIFY_TASKS, 0.0)})  # fmt: skip
    clip_grad_norm: float = setting(1.0, "clip the gradient norm to this value; 0 turns clipping off")
    dataloader_num_workers: int = setting(0, "worker processes for the DataLoader")
    stop_at_exact_match: float = setting(
        0.0, "stop once held-out exact match reaches this (0: run all epochs)"
    )
    time_budget_minutes: float = setting(
        0.0, "don't start an epoch that would end past N minutes (0: no limit)"
    )
    checkpoint_average: int = setting(
        3, "the final model: the mean of the last N epochs' weights (paper 6.1; 0: off)"
    )
    max_nonfinite_steps: int = setting(5, "a NaN/inf loss skips its step; this many in a row stop (0: never)")
    # float32 is what a textbook computes in; bfloat16 trains up to 2x faster where the CPU has bf16
    # instructions (avx512_bf16, AMX) or the GPU tensor cores, slower elsewhere: utils/runtime/precision.py
    precision: str = setting("auto", "number format of training: auto takes bf16 only where it is faster "
                          "(a bf16 GPU; on a CPU with avx512_bf16 or AMX, models 256 wide or more) and "
                          "says so; --bf16 and --fp16 (CUDA, --version huggingface) are spellings",
                          choices=PRECISIONS)  # fmt: skip
    resume: str = setting("", "go on with a stopped run: a .pt checkpoint (HF: checkpoint-N/) or 'auto' "
                       "(--version both: auto only, for both halves)")  # fmt: skip
    # an epoch can be long: a hard kill (SIGKILL, out of memory, a lost machine) gives no chance to save,
    # so without step checkpoints it loses everything since the last epoch's checkpoint
    save_every_steps: int = setting(0, "also save a resumable checkpoint every N optimizer steps "
                                 "(pytorch: checkpoints/step.pt, the newest only; HF: "
                                 "checkpoint-N/); 0: off")  # fmt: skip
    parallel_halves: bool = setting(
        True, "--version both on a CPU: train the two halves at once, half the threads each"
    )
    dist_timeout: int = setting(1800, "torchrun: seconds a process waits for the others before failing")
    # decoding and inference
    checkpoint: str = setting(
        "", "a .pt file or HF results folder, for --source, --interactive or --evaluate"
    )
    source: str = setting("", "one input to decode with --checkpoint")
    interactive: bool = setting(False, "read inputs line by line from stdin and decode each")
    beam_size: int = setting(1, "1: greedy decoding; >1: beam search with this many beams")
    length_penalty: float = setting(0.6, "beam search length penalty alpha (Wu et al. 2016)")
    max_length: int = setting(0, "longest output in tokens when decoding; 0: source length + 10")
    prompt: str = setting("", "--arch gpt: text the model continues (--checkpoint; longer than the context: "
                       "its last tokens are kept, with a warning)")  # fmt: skip
    max_new_tokens: int = setting(
        200, "tokens --prompt generates (it stops early at EOS where the data has one)"
    )
    do_sample: bool = setting(
        True, "--prompt samples the next token; --no-do_sample takes the most likely one"
    )
    temperature: float = setting(0.8, "sampling: divide the logits by this (< 1: surer, > 1: more varied)")
    top_k: int = setting(0, "sampling: only from the k most likely tokens (0: all)")
    top_p: float = setting(1.0, "sampling: only from the smallest set of tokens whose probability reaches p "
                        "(nucleus sampling, Holtzman et al. 2019; 1: all)")  # fmt: skip
    evaluate: bool = setting(False, "translate --test_prefix with --checkpoint and score it (BLEU, chrF)")
    test_prefix: str = setting("", "--evaluate: PREFIX.SRC is translated and scored against PREFIX.TGT")
    trust_remote_code: bool = setting(False, "--checkpoint: also load an HF folder whose model's code is "
                                      "in the folder (it runs that code; only trusted ones)")  # fmt: skip
    # watching it work
    debug: bool = setting(False, "print a step-by-step trace of the forward pass (first batch, --source)")
    debug_layers: str = setting("all", "layers shown by --debug: 'all' or a list such as '0,1'")
    debug_heads: str = setting("0", "heads whose attention matrix --debug prints: 'all' or '0,2'")
    visualize: bool = setting(False, "write attention heatmaps and analysis figures")
    explore: bool = setting(
        False,
        "--checkpoint with --source or --prompt: write the attention explorer of that input "
        "(explorer_input.html in the checkpoint's results folder)",
    )
    track_internals: bool = setting(False, "record attention and Q/K/V statistics during training")
    track_every: int = setting(50, "optimizer steps between two --track_internals snapshots")
    # the paper lab (pytorch_version/lab): which controlled experiments --version analysis runs
    experiments: str = setting("all", "--version analysis: the paper lab's experiments to run, 'all', 'none' "
                               "or some of residual, normalization, initialization, stochastic_depth, "
                               "scaling, positions, embeddings, ffn, schedules, label_smoothing, focal_loss "
                               "(comma-separated)")  # fmt: skip
    wandb: bool = setting(False, "log to Weights & Biases (offline unless logged in)")
    wandb_project: str = setting("transformer-tutorial", "Weights & Biases project name")
    quiet: bool = setting(False, "hide progress bars")
    fast: bool = setting(True, "the speed-ups of utils/fast/ (packed rows, fast dropout, ...); --no-fast "
                         "trains and decodes on the plain readable path")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()  # the model's shape
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "train_size", "eval_size",
                     "dist_timeout"):  # fmt: skip
            require_positive(name, getattr(self, name))
        for name in ("beam_size", "warmup_steps", "track_every"):
            require_positive(name, getattr(self, name))
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
        if not isinstance(self.save_every_steps, int) or self.save_every_steps < 0:
            raise UserError(f"save_every_steps must be >= 0 (0: off), got {self.save_every_steps!r}")
        if self.max_nonfinite_steps < 0:
            raise UserError(f"max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}")
        if self.resume and (self.checkpoint or self.version not in ("pytorch", "huggingface", "both")):
            raise UserError("--resume continues training: use it with --version pytorch, huggingface or "
                            "both, without --checkpoint")  # fmt: skip
        if self.resume not in ("", "auto") and self.version == "both":
            raise UserError(f"--version both resumes its two halves with --resume auto, not one checkpoint "
                            f"({self.resume})")  # fmt: skip
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

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int, **ids) -> ModelConfig:
        """The model's config: this run's shape, the vocabularies, and what the data says (`ids`: the
        special ids; an encoder-only model's labels, image size and channels)."""
        extra = {"max_position": self.context_length} if self.task in STEP_TASKS else {}  # the window
        return ModelConfig(**self.shape(), src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                           share_embeddings=self.share_embeddings, **{**extra, **ids})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a plain mapping (flags, a YAML file), rejecting unknown keys and wrong types.
        A setting not in it takes its task's or its family's own default where it has one
        (`task_defaults`, `arch_defaults`)."""
        data = _precision_spelt(data)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(unknown)}")
        for key, value in data.items():  # the types first: a family or task must be a string to look up
            expected = type(fields[key].default)
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise UserError(f"config key {key} expects {expected.__name__}, got {value!r:.80}")
        arch = data.get("arch", fields["arch"].default)
        if "task" not in data and arch in fields["task"].metadata["arch_defaults"]:  # a family's own task
            data = {**data, "task": fields["task"].metadata["arch_defaults"][arch]}
        task = data.get("task", fields["task"].default)
        for name, f in fields.items():  # a default of its own for the task or the family, unless given
            for own, kind in ((task, "task_defaults"), (arch, "arch_defaults")):
                if name not in data and own in f.metadata.get(kind, {}):
                    data = {**data, name: f.metadata[kind][own]}
        return cls(**data)


def _precision_spelt(data: dict[str, Any]) -> dict[str, Any]:
    """`bf16: true` / `fp16: true` (a YAML file's keys, or --bf16 / --fp16) are `precision: bf16` / `fp16`."""
    spellings = {k: data[k] for k in ("bf16", "fp16") if k in data}
    if not spellings:
        return data
    for key, value in spellings.items():
        if not isinstance(value, bool):
            raise UserError(f"config key {key} expects bool, got {value!r:.80}")
    chosen = {k for k, on in spellings.items() if on}
    if isinstance(data.get("precision"), str):  # another type: the type check below names it
        chosen.add(data["precision"])
    if len(chosen) > 1:
        raise UserError(f"precision settings exclude each other ({', '.join(sorted(chosen))}); choose one")
    rest = {k: v for k, v in data.items() if k not in spellings}
    return {**rest, "precision": chosen.pop()} if chosen else rest
