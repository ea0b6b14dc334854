"""Saving and loading checkpoints safely.

A checkpoint is a dict of plain types and tensors only (config and tokenizer as dicts),
so it loads with `torch.load(weights_only=True)`, which refuses pickled code. It is
written to a temporary file, flushed to disk and renamed over the target, so a crash
mid-save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from utils.runtime.config import ModelConfig, UserError
from utils.runtime.resilience import atomic_write

FORMAT = "transformer-tutorial/pytorch"
TOOLKIT_VERSION = "0.1.0"


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """The first 16 hex digits of a sha256 over the weights in key order (pytorch_version's key names):
    two models have the same fingerprint exactly when they hold the same weights under the same names.
    --version both records each half's at its start, so comparison.json says what it measured."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through utils.runtime.resilience.atomic_write: temp file, fsync, rename; a full disk is a
    one-line WriteError and leaves the previous file whole."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path, model, tokenizer, **extra: Any) -> None:
    """Model weights, architecture, tokenizer and any plain-typed `extra` (epoch, metrics...)."""
    atomic_save(
        {
            "format": FORMAT,
            "toolkit_version": TOOLKIT_VERSION,
            "model_config": model.config.to_dict(),
            "tokenizer": tokenizer.to_dict(),
            "model_state": model.state_dict(),
            **extra,
        },
        path,
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, with a one-line error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint is empty: {path}")
    if path.suffix in (".safetensors", ".bin") or _in_hf_folder(path):
        raise UserError(
            f"{path} belongs to a Hugging Face model folder; pass the folder {path.parent} "
            "(huggingface_version), or a pytorch_version .pt checkpoint"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it is not a plain weights file "
            f"(it may carry code): {_unpickling_reason(err)}"
        ) from err
    except Exception as err:
        reason = (str(err).splitlines() or [""])[0]  # one line: the CLI prints the message as is
        raise UserError(f"checkpoint {path} is corrupt or truncated: {type(err).__name__}: {reason}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a transformer-tutorial pytorch checkpoint")
    missing = [key for key in ("model_config", "tokenizer", "model_state") if key not in data]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete: no {', '.join(missing)}")
    _check_contents(path, data)
    return data


def _check_contents(path: Path, data: dict[str, Any]) -> None:
    """What a checkpoint says about itself holds together, before any model is built from it: a valid
    model config, a tokenizer whose vocabulary is the model's, weights that are named tensors. A file
    edited or damaged into other values (the fuzzing of tests/robust/test_fuzz_checkpoints.py) is one
    line naming it, whichever part is wrong."""
    from utils.data.tokenizer import tokenizer_from_dict

    try:
        if not isinstance(data["model_config"], dict):
            raise UserError(f"its model_config is a {type(data['model_config']).__name__}, not a mapping")
        config = ModelConfig.from_dict(data["model_config"])
        tokenizer = tokenizer_from_dict(data["tokenizer"])
        sizes = (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    except UserError as err:
        raise UserError(f"checkpoint {path} does not describe a model this toolkit builds: {err}") from err
    except Exception as err:  # values of the wrong type where save_checkpoint writes plain ones
        reason = (str(err).splitlines() or [""])[0]
        raise UserError(f"checkpoint {path} is damaged: {type(err).__name__}: {reason}") from err
    if sizes != (config.src_vocab_size, config.tgt_vocab_size):
        raise UserError(f"checkpoint {path} is damaged: its tokenizer has {sizes[0]}/{sizes[1]} tokens, its "
                        f"model {config.src_vocab_size}/{config.tgt_vocab_size}")  # fmt: skip
    state = data["model_state"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"checkpoint {path} is damaged: its model_state is not a mapping of names to tensors")


def _in_hf_folder(path: Path) -> bool:
    """Next to a Hugging Face config.json (one with a model_type), as model.safetensors is."""
    config = path.parent / "config.json"
    try:
        return config.is_file() and '"model_type"' in config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _unpickling_reason(err: Exception) -> str:
    """The specific line of torch's weights_only error (e.g. "unsupported GLOBAL posix.system").

    Its first line is generic advice to re-run with weights_only=False, which is exactly what
    must not be done with a file of unknown origin, so it is skipped.
    """
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    specific = [line.strip() for line in after.splitlines() if line.strip()][:1]  # what it refused
    specific = specific or [line for line in lines if not line.startswith(generic)]
    return (specific or lines or ["unreadable pickle"])[0].split(". Please use")[0]  # not how to allow it


def model_config_of(data: dict[str, Any]) -> ModelConfig:
    return ModelConfig.from_dict(data["model_config"])
