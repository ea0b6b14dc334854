"""What the toolkit reads from a Hugging Face folder, checked before anything is built from it.

A folder may come from someone else (downloaded, shared), so reading it never runs code, and whatever
is wrong with one of its files ends in one line naming the folder:

    not_a_model_folder  a --checkpoint path that is no save_pretrained folder (a pytorch_version one, ...)
    weights_refusal     weights are only ever read from model.safetensors, whose header and tensors are
                        checked first; a folder that offers pickled pytorch_model.bin weights is refused
    pickle_refusal      every pickle of a Trainer checkpoint (optimizer.pt, scheduler.pt, rng_state.pth,
                        training_args.bin) is checked without unpickling it
                        (torch.serialization.get_unsafe_globals_in_checkpoint lists what it would call):
                        anything but tensors, numpy's RNG state or the Trainer's own argument classes is
                        refused. The Trainer (transformers 5.x) loads them with weights_only=True and
                        never loads training_args.bin; the check makes the refusal one line.
    reading(folder)     `with reading(folder):` around building a model or tokenizer from its files:
                        what transformers raises for a damaged or edited config.json, tokenizer.json,
                        generation_config.json, ... becomes one line naming the folder (the fuzzing of
                        tests/robust/test_fuzz_checkpoints.py generates such files)
    check_loading_info  the weights fit the model the config builds: no tensor missing, none left over
                        (transformers would otherwise initialise the missing ones at random, silently)
    decoding_config     of generation_config.json the toolkit's decoding takes the token ids and the
                        tokens never written, checked against the vocabulary; every other setting is
                        the decoding call's own, so an edited file cannot make greedy decoding sample
"""

from __future__ import annotations

import enum
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

from utils.runtime.config import UserError


def not_a_model_folder(folder: Path) -> str:
    """Why `folder` is not a save_pretrained folder this toolkit loads ('' when it is)."""
    pt_files = sorted(folder.glob("*.pt"))
    if pt_files:
        return f"{folder} holds pytorch_version checkpoints; pass one of its .pt files, e.g. {pt_files[0]}"
    config = folder / "config.json"
    if not config.is_file():
        return f"{folder} is not a saved Hugging Face model (no config.json in it)"
    if '"model_type"' not in config.read_text(encoding="utf-8", errors="replace"):
        return f"{folder} is a pytorch_version results folder; pass {folder}/checkpoints/best_model.pt"
    return weights_refusal(folder)


def weights_refusal(folder: Path) -> str:
    """'' if `folder` has a readable model.safetensors; pickled pytorch_model.bin weights are never loaded."""
    weights = folder / "model.safetensors"
    if weights.is_file():
        try:  # the header and that the file holds every tensor it lists: a truncated copy fails here
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as err:
            return (
                f"{weights} cannot be read (truncated, or not a safetensors file): {str(err).splitlines()[0]}"
            )
        return ""
    pickled = (folder / "pytorch_model.bin").exists()
    return f"refusing {folder}: no model.safetensors" + (
        " (only pickled pytorch_model.bin weights, which can carry code)" if pickled else ""
    )


# the pickles of a Trainer checkpoint, and what each may name besides tensors: rng_state.pth numpy's RNG
# state (the Trainer loads it under transformers' safe_globals, which allows exactly these);
# training_args.bin the Trainer's argument classes (`_argument_class`)
PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin")
_NUMPY = ("numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct",
          "numpy.core.multiarray._reconstruct")  # fmt: skip


def _argument_class(name: str) -> bool:
    """A class training_args.bin may name: the arguments, their enums, accelerate's state and config
    classes, from modules already imported (nothing is imported or called to decide)."""
    module, _, attr = name.rpartition(".")
    if not module.startswith(("transformers.", "accelerate.")) or module not in sys.modules:
        return False
    from accelerate.state import PartialState
    from transformers import TrainingArguments
    from transformers.trainer_pt_utils import AcceleratorConfig

    cls = getattr(sys.modules[module], attr, None)
    return isinstance(cls, type) and issubclass(cls, (enum.Enum, TrainingArguments, AcceleratorConfig,
                                                      PartialState))  # fmt: skip


def pickle_refusal(folder: Path) -> str:
    """'' if no pickle in `folder` would call anything unsafe when loaded; decided without loading."""
    for path in sorted(p for pattern in PICKLES for p in folder.glob(pattern)):
        try:
            named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as err:  # a raw pickle (not torch.save's zip), or a truncated file
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            return f"refusing {path}: it is not a complete torch.save file ({reason})"
        if path.name.startswith("rng_state"):
            named = [n for n in named if n not in _NUMPY and not n.startswith("numpy.dtypes.")]
        elif path.name == "training_args.bin":
            named = [n for n in named if not _argument_class(n)]
        if named:
            return (f"refusing {path}: loading it would call {', '.join(named[:3])}, not plain data "
                    "(a file that can run code); resume only from checkpoints you trust")  # fmt: skip
    return ""


THE_FLAG = "the toolkit runs no code from a folder unless you pass --trust_remote_code (if you trust it)"


@contextmanager
def reading(folder: Path, trust_remote_code: bool = False):
    """Errors raised while a model, its config or its tokenizer is built from `folder`'s files: one line
    naming the folder. A UserError of the toolkit's own checks (a config value out of range) keeps its
    words; anything else names its type and its first line."""
    try:
        yield
    except UserError as err:
        if str(folder) in str(err):
            raise
        raise UserError(f"{folder}: {err}") from err
    except Exception as err:  # anything a damaged file makes transformers, tokenizers or torch raise
        if not trust_remote_code and "trust_remote_code" in str(err):  # e.g. tokenizer_config's auto_map
            raise UserError(f"{folder} needs code from the folder to load; {THE_FLAG}") from err
        reason = (str(err).splitlines() or [""])[0][:300]
        raise UserError(f"cannot load the model in {folder}: {type(err).__name__}: {reason}") from err


def check_vocabulary(folder: Path, tokenizer_size: int, vocab_size) -> None:
    """A tokenizer that writes ids the model has no embedding for (a tokenizer.json of another model,
    or edited) is refused here rather than failing inside the first forward pass."""
    if not isinstance(vocab_size, int) or tokenizer_size > vocab_size:
        raise UserError(f"{folder}: its tokenizer has {tokenizer_size} tokens, more than the model's "
                        f"vocabulary of {vocab_size}")  # fmt: skip


def check_loading_info(folder: Path, info: dict) -> None:
    """`from_pretrained(..., output_loading_info=True)`'s report: every weight the model needs came from
    model.safetensors and nothing in it went unused (a config.json that names another architecture, or
    weights of another model)."""
    missing, unexpected = info.get("missing_keys") or [], info.get("unexpected_keys") or []
    mismatched = info.get("mismatched_keys") or []
    if missing or unexpected or mismatched:
        what, keys = next((w, k) for w, k in (("lacks", missing), ("has unused", unexpected),
                                              ("has other shapes for", mismatched)) if k)  # fmt: skip
        named = ", ".join(sorted(map(str, keys))[:2]) + (" ..." if len(keys) > 2 else "")
        raise UserError(f"{folder}/model.safetensors does not fit its config.json: it {what} {named}")


DECODING_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def decoding_config(folder: Path, model, vocab_size: int):
    """The GenerationConfig the toolkit's decoding uses: the model's own defaults (from its checked
    config.json), with what generation_config.json says of the token ids and of the tokens never
    written (a language model suppresses EOS), each checked to be an id below `vocab_size`."""
    from transformers import GenerationConfig

    saved, clean = model.generation_config, GenerationConfig()
    model.generation_config = clean
    model._set_generation_defaults()  # fills `clean` from the config
    for name in (*DECODING_IDS, "suppress_tokens"):
        value = getattr(saved, name, None)
        if value is None:
            continue
        listed = name in ("eos_token_id", "suppress_tokens")  # these may be lists of ids
        ids = value if listed and isinstance(value, list) else [value]
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in ids):
            expected = "token ids" if listed else "a token id"
            raise UserError(f"{folder}/generation_config.json: {name} must be {expected} below {vocab_size}, "
                            f"got {value!r:.60}")  # fmt: skip
        setattr(clean, name, value)
    return clean
