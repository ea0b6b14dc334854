"""Decoding text with a saved checkpoint: `--checkpoint PATH --source TEXT` and `--interactive`."""

from __future__ import annotations

import logging

import torch

from pytorch_version.decoding import generate
from pytorch_version.model import Transformer
from utils.data.tasks import pad_batch
from utils.data.tokenizer import tokenizer_from_dict
from utils.fast import SpeedUps
from utils.observe.trace_printer import trace_example
from utils.runtime.checkpoint import load_checkpoint, model_config_of
from utils.runtime.config import UserError

logger = logging.getLogger(__name__)


def load_for_inference(path, device: str | torch.device = "cpu", fast: bool = True):
    """Checkpoint file -> (model in eval mode, tokenizer, the raw checkpoint dict); `fast`: with the
    speed-ups of utils/fast plugged in (--no-fast: the readable model)."""
    data = load_checkpoint(path)
    model = Transformer(model_config_of(data))
    try:
        model.load_state_dict(data["model_state"])
    except RuntimeError as err:
        # torch lists every mismatching tensor on its own line; the CLI error is one line
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"checkpoint {path} does not match its own model config: {problems[0]}{more}"
        raise UserError(message) from err
    model = SpeedUps.from_flag(fast).plug_in(model)
    return model.to(device).eval(), tokenizer_from_dict(data["tokenizer"]), data


def translate(model, tokenizer, texts: list[str], beam_size: int = 1, alpha: float = 0.6,
              max_length: int = 0) -> list[str]:  # fmt: skip
    """Decode each text; `max_length` 0 allows source length + 10 new tokens."""
    if any(not t.strip() for t in texts):
        raise UserError("empty --source: give some text to decode")
    limit = model.config.max_position - 1
    encoded = []
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) > limit:
            logger.warning("input of %d tokens truncated to the model's maximum of %d", len(ids), limit)
            ids = ids[: limit - 1] + [tokenizer.eos_id]
        encoded.append(ids)
    device = next(model.parameters()).device
    src = pad_batch(encoded, tokenizer.pad_id).to(device)
    new_tokens = min(max_length or src.size(1) + 10, limit)
    outputs = generate(model, src, new_tokens, beam_size, alpha)
    return [tokenizer.decode(row) for row in outputs.tolist()]


def trace_translation(model, tokenizer, text: str, output: str, layers="all", heads="0") -> str:
    """`--debug` with `--source`: the forward pass that scores `output` for `text`.

    Each side is encoded and labelled with its own vocabulary (they differ with --separate_vocab).
    """
    source, target = tokenizer.source, tokenizer.target
    src = torch.tensor([source.encode(text)])
    tgt_in = torch.tensor([[tokenizer.bos_id, *target.encode(output, add_eos=False)]])
    device = next(model.parameters()).device
    to_tokens = (source.tokens, target.tokens)
    return trace_example(model, src.to(device), tgt_in.to(device), to_tokens, layers, heads)
