"""Decoding text with a saved checkpoint: `--checkpoint PATH --source TEXT`, `--interactive` and,
for a decoder-only model (GPT), `--prompt TEXT`.

Either family loads from the same kind of file (`model_for` builds the one its config names).
A GPT serves two kinds of use, told apart by what it was trained on (`checkpoint_task`):

    a toy task     --source / --interactive decode as the encoder-decoder does; the prompt is the
                   source's ids without EOS and BOS separates it from the output: hello<s>olleh</s>
    --task lm      --prompt / --interactive continue a text (pytorch_version/sampling.py)
"""

from __future__ import annotations

import logging

import torch

from pytorch_version.decoding import generate
from pytorch_version.families import model_for
from pytorch_version.sampling import sample
from utils.data.tasks import pad_batch, tokenizer_for_task
from utils.data.tokenizer import checked_prompt, tokenizer_from_dict
from utils.fast import SpeedUps
from utils.runtime.checkpoint import load_checkpoint, model_config_of
from utils.runtime.config import TOY_TASKS, UserError

logger = logging.getLogger(__name__)


def load_for_inference(path, device: str | torch.device = "cpu", fast: bool = True):
    """Checkpoint file -> (model in eval mode, tokenizer, the raw checkpoint dict); `fast`: with the
    speed-ups of utils/fast plugged in (--no-fast: the readable model)."""
    data = load_checkpoint(path)
    model = model_for(model_config_of(data))  # the encoder-decoder or the GPT, as --arch was
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


def checkpoint_task(data: dict) -> str:
    """The --task a checkpoint was trained on: as it records it (`task`, or `run_config`'s), else,
    for a GPT, read off its tokenizer: a toy task's alphabet means a toy task (the first with that
    alphabet: copy and reversal share one), anything else (a text's own characters, a byte-level BPE)
    "lm". "" for an encoder-decoder that does not say."""
    for recorded in (data.get("task"), (data.get("run_config") or {}).get("task")):
        if isinstance(recorded, str) and recorded:
            return recorded
    if data["model_config"].get("arch") != "gpt":
        return ""
    tokenizer = data["tokenizer"]
    for task in TOY_TASKS:
        if tokenizer.get("type") == "char" and tokenizer.get("alphabet") == tokenizer_for_task(task).alphabet:
            return task
    return "lm"


def is_decoder_only(model) -> bool:
    return model.config.arch == "gpt"


def translate(model, tokenizer, texts: list[str], beam_size: int = 1, alpha: float = 0.6,
              max_length: int = 0) -> list[str]:  # fmt: skip
    """Decode each text; `max_length` 0 allows source length + 10 new tokens.

    A GPT reads the source, then BOS, then writes the output in the same sequence, so the source
    goes in without EOS (as training wrote it) and source and output share the context."""
    if any(not t.strip() for t in texts):
        raise UserError("empty --source: give some text to decode")
    gpt = is_decoder_only(model)
    limit = model.config.max_position - 1  # a GPT: BOS needs a position after the source
    encoded = []
    for text in texts:
        ids = tokenizer.encode(text, add_eos=not gpt)
        if len(ids) > limit:
            logger.warning("input of %d tokens truncated to the model's maximum of %d", len(ids), limit)
            ids = ids[:limit] if gpt else ids[: limit - 1] + [tokenizer.eos_id]
        encoded.append(ids)
    device = next(model.parameters()).device
    src = pad_batch(encoded, tokenizer.pad_id).to(device)
    room = model.config.max_position - src.size(1) if gpt else limit  # positions left for the output
    new_tokens = min(max_length or src.size(1) + 10, room)
    outputs = generate(model, src, new_tokens, beam_size, alpha)
    return [tokenizer.decode(row) for row in outputs.tolist()]


def translation_example(model, tokenizer, text: str, output: str) -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass that scores `output` for `text`: what `--debug`
    traces and `--explore` draws with `--source`.

    Each side is encoded and labelled with its own vocabulary (they differ with --separate_vocab).
    """
    source, target = tokenizer.source, tokenizer.target
    src = torch.tensor([source.encode(text, add_eos=not is_decoder_only(model))])
    tgt_in = torch.tensor([[tokenizer.bos_id, *target.encode(output, add_eos=False)]])
    device = next(model.parameters()).device
    return src.to(device), tgt_in.to(device), (source.tokens, target.tokens)


# --- a GPT continues a text: --prompt ----------------------------------------------------------


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The ids of a --prompt (no EOS: the text goes on); a one-line error if nothing is left."""
    if not prompt.strip():
        raise UserError("empty --prompt: give some text for the model to continue")
    return checked_prompt(tokenizer.encode(prompt, add_eos=False), tokenizer.unk_id)


def continue_text(model, tokenizer, prompt: str, cfg, task: str = "lm") -> str:
    """--prompt: the text the model writes after `prompt` (the prompt itself not included).

    `cfg` gives the sampling settings (max_new_tokens, do_sample, temperature, top_k, top_p) and
    the seed: the same prompt and --seed give the same text. A language model's data has no EOS
    (nor <unk>): they are never output, and it writes --max_new_tokens tokens; a toy-task GPT stops
    at EOS."""
    lm = task == "lm"
    never = (tokenizer.eos_id, tokenizer.unk_id) if lm else ()
    new = sample(model, prompt_ids(tokenizer, prompt), cfg.max_new_tokens, cfg.do_sample, cfg.temperature,
                 cfg.top_k, cfg.top_p, seed=cfg.seed, eos_id=None if lm else tokenizer.eos_id,
                 never=never)  # fmt: skip
    return tokenizer.decode(new)


def prompt_example(model, tokenizer, prompt: str) -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass over the prompt (the part the model reads, its
    last max_position tokens), whose last position predicts the first new token: what `--debug`
    traces and `--explore` draws with `--prompt`."""
    ids = prompt_ids(tokenizer, prompt)[-model.config.max_position :]
    device = next(model.parameters()).device
    empty = torch.zeros(1, 0, dtype=torch.long, device=device)  # a GPT's "source": nothing
    return empty, torch.tensor([ids], device=device), tokenizer.tokens
