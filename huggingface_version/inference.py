"""Decoding text with a saved results_huggingface/ folder (the Hugging Face twin of
pytorch_version.inference): `--checkpoint results_huggingface --source TEXT`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

import huggingface_version  # noqa: F401  (registers the model type with the Auto classes)
from huggingface_version.configuration import TutorialTransformerConfig
from huggingface_version.convert import model_config_of
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from huggingface_version.resume import weights_refusal
from utils.fast import SpeedUps
from utils.observe.trace_printer import trace_example
from utils.runtime.config import UserError

logger = logging.getLogger(__name__)


def load_hf_for_inference(folder, device: str | torch.device = "cpu", fast: bool = True):
    """A save_pretrained folder -> (model in eval mode, its tokenizer); `fast`: with the speed-ups
    of utils/fast plugged in (--no-fast: the model as transformers builds it)."""
    folder = Path(folder)
    if refusal := _not_a_model_folder(folder):
        raise UserError(refusal)
    try:  # safetensors only: pickled weights (pytorch_model.bin) can run code when loaded
        config = AutoConfig.from_pretrained(folder)
        if isinstance(config, TutorialTransformerConfig):
            model_config_of(config)  # every value checked before a model is built from it
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, config=config, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        if isinstance(err, UserError):
            raise UserError(f"{folder}/config.json: {err}") from err
        raise UserError(f"cannot load the model in {folder}: {str(err).splitlines()[0]}") from err
    if not isinstance(model, TutorialTransformerForConditionalGeneration):
        raise UserError(f"{folder} holds a {type(model).__name__}, not a transformer-tutorial model")
    return SpeedUps.from_flag(fast).plug_in(model).to(device).eval(), tokenizer


def _not_a_model_folder(folder: Path) -> str:
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


@torch.no_grad()
def translate_hf(model, tokenizer, texts: list[str], beam_size: int = 1, alpha: float = 0.6,
                 max_length: int = 0) -> list[str]:  # fmt: skip
    """Decode each text with `generate`; `max_length` 0 allows source length + 10 new tokens.

    Greedy outputs equal pytorch_version's; beam search uses HF's length penalty
    (score / |Y|^alpha, not GNMT's), so with alpha > 0 a beam may rank differently.
    """
    if any(not t.strip() for t in texts):
        raise UserError("empty --source: give some text to decode")
    limit = model.config.max_position - 1
    longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])
    if longest > limit:
        logger.warning("input of %d tokens truncated to the model's maximum of %d", longest, limit)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=limit)
    batch = batch.to(model.device)
    new_tokens = min(max_length or batch["input_ids"].size(1) + 10, limit)
    beams = {"num_beams": beam_size, "length_penalty": alpha, "early_stopping": True} if beam_size > 1 else {}
    outputs = model.generate(**batch, max_new_tokens=new_tokens, **beams)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in outputs]


def trace_translation_hf(model, tokenizer, text: str, output: str, layers="all", heads="0") -> str:
    """`--debug` with `--source`: the forward pass that scores `output` for `text` (hooks)."""
    src = tokenizer([text], return_tensors="pt")["input_ids"]
    start = model.config.decoder_start_token_id
    tgt = torch.tensor([[start, *tokenizer(output, add_special_tokens=False)["input_ids"]]])
    return trace_example(model, src.to(model.device), tgt.to(model.device), tokenizer.convert_ids_to_tokens,
                         layers, heads)  # fmt: skip
