"""Saving and loading checkpoints safely.

A checkpoint is a dict of plain types and tensors only (config and tokenizer as dicts),
so it loads with `torch.load(weights_only=True)`, which refuses pickled code. It is
written to a temporary file, flushed to disk and renamed over the target, so a crash
mid-save leaves the previous file intact.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from utils.runtime.config import ModelConfig, UserError
from utils.runtime.resilience import atomic_write

FORMAT = "transformer-tutorial/pytorch"
TOOLKIT_VERSION = "0.1.0"


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
    return data


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
