"""Decoding text with a saved results_huggingface/ folder (the Hugging Face twin of
pytorch_version.inference): `--checkpoint results_huggingface --source TEXT` and, for a GPT, `--prompt TEXT`.

The folder carries the model's .py files (huggingface_version/__init__.py); the toolkit builds the
model from its own classes and runs a folder's code only with `--trust_remote_code`.
Without the toolkit: `AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)`, for a GPT
`AutoModelForCausalLM` (or `pipeline("text-generation", model=folder, trust_remote_code=True)`).

A GPT's folder serves two uses, told apart by the task its config.json records (`hf_task`), as
pytorch_version.inference tells its checkpoints apart:

    a toy task     --source decodes (greedy or beam): the source, then BOS, then the output, one sequence
    --task lm      --prompt continues a text (`generate`, huggingface_version/generation.py)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import huggingface_version  # noqa: F401  (registers the model type with the Auto classes)
from huggingface_version import hooks
from huggingface_version.configuration import TOOLKIT_NAMES
from huggingface_version.configuration_gpt import TutorialGPTConfig
from huggingface_version.convert import GPT_ONLY, model_config_of
from huggingface_version.folders import (
    THE_FLAG,
    check_loading_info,
    check_vocabulary,
    decoding_config,
    not_a_model_folder,
    reading,
)
from huggingface_version.generation import continue_ids, sampling_settings
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from huggingface_version.modeling_gpt import TutorialGPTForCausalLM
from utils.data.tasks import tokenizer_for_task
from utils.data.tokenizer import checked_prompt
from utils.fast import SpeedUps
from utils.observe.tracing import register_tracer
from utils.runtime.config import TOY_TASKS, ModelConfig, UserError
from utils.runtime.shape import LAB_FIELDS

logger = logging.getLogger(__name__)


def load_hf_for_inference(folder, device: str | torch.device = "cpu", fast: bool = True,
                          trust_remote_code: bool = False):  # fmt: skip
    """A save_pretrained folder -> (model in eval mode, its tokenizer); `fast`: with the speed-ups
    of utils/fast plugged in (--no-fast: the model as transformers builds it).

    The model is built from this toolkit's own classes (registered in huggingface_version/__init__.py),
    never from the .py files a folder carries, unless `trust_remote_code` (--trust_remote_code): then a
    folder whose config.json names another model_type with an `auto_map` loads with its own code, as
    transformers' trust_remote_code=True does, and must still have the toolkit's config fields."""
    folder = Path(folder)
    if refusal := not_a_model_folder(folder):
        raise UserError(refusal)
    if not trust_remote_code and (refusal := _needs_remote_code(folder)):
        raise UserError(refusal)
    with reading(folder, trust_remote_code):  # safetensors only: pickled weights can run code when loaded
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if _has_toolkit_fields(config):
            model_config_of(config)  # every value checked before a model is built from it
        auto = AutoModelForCausalLM if _is_gpt(config) else AutoModelForSeq2SeqLM
        model, info = auto.from_pretrained(
            folder,
            config=config,
            use_safetensors=True,
            output_loading_info=True,
            trust_remote_code=trust_remote_code,
        )
        check_loading_info(folder, info)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        vocab = model.config.vocab_size  # the encoder-decoder's source vocabulary too
        check_vocabulary(folder, len(tokenizer), min(getattr(model.config, "src_vocab_size", vocab), vocab))
        if hasattr(model, "_set_generation_defaults"):  # the toolkit's classes (or their shipped copies)
            model.generation_config = decoding_config(folder, model, vocab)
    ours = isinstance(model, (TutorialTransformerForConditionalGeneration, TutorialGPTForCausalLM))
    if not ours and not (trust_remote_code and _has_toolkit_fields(model.config)):
        raise UserError(f"{folder} holds a {type(model).__name__}, not a transformer-tutorial model")
    if not ours:  # the folder's own class, with the toolkit's module layout: trace it the same way
        tracer = hooks.run_gpt_with_cache if _is_gpt(model.config) else hooks.run_with_cache
        register_tracer(type(model), tracer)
    return SpeedUps.from_flag(fast).plug_in(model).to(device).eval(), tokenizer


def _needs_remote_code(folder: Path) -> str:
    """Why loading `folder` would run code it carries ('' when this process's classes build it): its
    config.json names a model_type no class here is registered for, and an auto_map to its own files."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # AutoConfig says what is wrong with it
    if not isinstance(config, dict) or not isinstance(config.get("auto_map"), dict):
        return ""
    model_type, auto_map = config.get("model_type"), config["auto_map"]
    if model_type in CONFIG_MAPPING:  # built by the class registered for it, whatever auto_map says
        return ""
    code = sorted({ref.split(".")[0] + ".py" for ref in auto_map.values() if isinstance(ref, str)})
    return (f"{folder}/config.json names model_type {model_type!r}, whose code is in the folder "
            f"({', '.join(code)}); {THE_FLAG}")  # fmt: skip


def _is_gpt(config) -> bool:
    """A decoder-only GPT's config: this toolkit's TutorialGPTConfig, or a copy of it run as remote code."""
    return isinstance(config, TutorialGPTConfig) or getattr(config, "arch", None) == "gpt"


def _has_toolkit_fields(config) -> bool:
    """Does `config` carry every ModelConfig field of its family (under its Hugging Face name; a GPT has
    one vocabulary)? This toolkit's config, or a copy of it run as remote code."""
    gpt = _is_gpt(config)
    names = [n for n in ModelConfig.__dataclass_fields__ if not ((gpt and n in GPT_ONLY) or n in LAB_FIELDS)]
    return all(hasattr(config, TOOLKIT_NAMES.get(name, name)) for name in names)


def hf_task(model, tokenizer=None) -> str:
    """The --task a folder's model was trained on: as its config.json records it (`task`), else, for a
    GPT, read off its tokenizer as pytorch_version.inference.checkpoint_task does: a toy task's alphabet
    means a toy task (copy and reversal share one), anything else "lm". "" where nothing says."""
    recorded = getattr(model.config, "task", "")
    if isinstance(recorded, str) and recorded:
        return recorded
    if not _is_gpt(model.config) or tokenizer is None:
        return ""
    vocab = set(tokenizer.get_vocab())
    for task in TOY_TASKS:
        if vocab == set(tokenizer_for_task(task).id_to_token):
            return task
    return "lm"


def _is_language_model(model) -> bool:
    return _is_gpt(model.config) and getattr(model.config, "task", "") == "lm"


@torch.no_grad()
def translate_hf(model, tokenizer, texts: list[str], beam_size: int = 1, alpha: float = 0.6,
                 max_length: int = 0) -> list[str]:  # fmt: skip
    """Decode each text with `generate`; `max_length` 0 allows source length + 10 new tokens.

    Greedy outputs equal pytorch_version's; beam search uses HF's length penalty
    (score / |Y|^alpha, not GNMT's), so with alpha > 0 a beam may rank differently.
    A GPT reads each source then BOS (left-padded, so every row continues from its own end) and writes
    the output after them, within its context of max_position tokens.
    """
    if any(not t.strip() for t in texts):
        raise UserError("empty --source: give some text to decode")
    gpt = _is_gpt(model.config)
    limit = model.config.max_position - 1  # a GPT: BOS needs a position after the source
    sources = tokenizer(texts, add_special_tokens=not gpt)["input_ids"]
    longest = max(len(ids) for ids in sources)
    if longest > limit:
        logger.warning("input of %d tokens truncated to the model's maximum of %d", longest, limit)
    if gpt:
        rows = [ids[:limit] + [model.config.bos_token_id] for ids in sources]
        batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")  # on the left
    else:
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=limit)
    batch = batch.to(model.device)
    width = batch["input_ids"].size(1)
    room = model.config.max_position - width + 1 if gpt else limit  # the last token is read by no one
    new_tokens = min(max_length or (width - 1 if gpt else width) + 10, room)
    beams = {"num_beams": beam_size, "length_penalty": alpha, "early_stopping": True} if beam_size > 1 else {}
    outputs = model.generate(**batch, max_new_tokens=new_tokens, **beams)
    outputs = outputs[:, width:] if gpt else outputs  # a GPT's output follows its input
    return [tokenizer.decode(row, skip_special_tokens=True) for row in outputs]


def translation_example_hf(model, tokenizer, text: str, output: str) -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass that scores `output` for `text` (`--debug` traces it
    with hooks, `--explore` draws it); a GPT's over the one sequence, source then BOS and the output."""
    gpt = _is_gpt(model.config)
    src = torch.tensor([tokenizer(text, add_special_tokens=not gpt)["input_ids"]])
    start = model.config.bos_token_id if gpt else model.config.decoder_start_token_id
    tgt = torch.tensor([[start, *tokenizer(output, add_special_tokens=False)["input_ids"]]])
    return src.to(model.device), tgt.to(model.device), tokenizer.convert_ids_to_tokens


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The ids of a --prompt as the text goes on (nothing appended); a one-line error if none."""
    return checked_prompt(tokenizer(prompt, add_special_tokens=False)["input_ids"], tokenizer.unk_token_id)


def continue_text_hf(model, tokenizer, prompt: str, cfg) -> str:
    """--prompt with a GPT's folder: the text it writes after `prompt` (the prompt not included), by
    `generate` with --do_sample, --temperature, --top_k, --top_p, --max_new_tokens and --seed (the same
    prompt and seed, the same text). A language model's text has no EOS (nor <unk>): never written, it
    runs to --max_new_tokens; a toy task's GPT stops at EOS."""
    lm = _is_language_model(model) or hf_task(model, tokenizer) == "lm"
    never = (tokenizer.eos_token_id, tokenizer.unk_token_id) if lm else ()
    ids = _prompt_ids(tokenizer, prompt)
    new = continue_ids(model, ids, cfg.max_new_tokens, sampling_settings(cfg), seed=cfg.seed,
                       stop_at_eos=not lm, never=never)  # fmt: skip
    return tokenizer.decode(new, skip_special_tokens=True)


def prompt_example_hf(model, tokenizer, prompt: str) -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass over the prompt (its last max_position tokens), whose
    last position predicts the first new token, as pytorch_version.inference.prompt_example."""
    ids = _prompt_ids(tokenizer, prompt)[-model.config.max_position :]
    empty = torch.zeros(1, 0, dtype=torch.long, device=model.device)  # a GPT's "source": nothing
    tokens = torch.tensor([ids], device=model.device)
    return empty, tokens, tokenizer.convert_ids_to_tokens
