"""--checkpoint PATH: which version wrote it, and loading it for decoding.

The CLI takes either version's checkpoint in the same flag: a pytorch_version `.pt` file or a
huggingface_version `save_pretrained` folder. `checkpoint_kind` is the one place that tells them
apart, so decoding and --evaluate cannot disagree about a path, and a path that is neither (or the
wrong half of one, e.g. a file out of a Hugging Face folder) ends with one line saying what to pass.
The contents are checked by the versions' loaders (empty, truncated, foreign or malicious files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from utils.runtime.config import ENCODER_ONLY, UserError
from utils.runtime.console import hide_loading_bars

EXPECTED = "expected a pytorch_version .pt file or a Hugging Face save_pretrained folder (with config.json)"


def checkpoint_kind(path: str | Path) -> Literal["pytorch", "huggingface"]:
    """What a --checkpoint path holds: 'pytorch' for a .pt file, 'huggingface' for a save_pretrained
    folder. Anything else (missing, a folder of .pt files, a file out of a Hugging Face folder, ...)
    is a one-line UserError that says what to pass instead."""
    path = Path(path)
    if path.is_dir():
        return _folder_kind(path)
    if path.is_file():
        if path.suffix == ".pt":
            return "pytorch"
        if path.suffix in (".safetensors", ".bin") or _is_hf_config(path.parent / "config.json"):
            raise UserError(
                f"{path} belongs to a Hugging Face model folder; pass the folder {path.parent} "
                "(huggingface_version), or a pytorch_version .pt checkpoint"
            )
        raise UserError(f"{path} is not a checkpoint: {EXPECTED}")
    raise UserError(f"checkpoint not found: {path}; {EXPECTED}")


def _folder_kind(folder: Path) -> Literal["huggingface"]:
    pt_files = sorted(folder.glob("*.pt"))
    if pt_files:
        raise UserError(
            f"{folder} holds pytorch_version checkpoints; pass one of its .pt files, e.g. {pt_files[0]}"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{folder} is not a saved Hugging Face model (no config.json in it); {EXPECTED}")
    if not _is_hf_config(config):  # results_pytorch/ has a config.json too: the run's settings
        raise UserError(
            f"{folder} is a pytorch_version results folder; pass {folder}/checkpoints/best_model.pt"
        )
    return "huggingface"


def _is_hf_config(config: Path) -> bool:
    """A Hugging Face config.json names its model_type; the run settings of results_pytorch/ do not."""
    try:
        return config.is_file() and '"model_type"' in config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


@dataclass
class Loaded:
    """A checkpoint ready to decode, whichever version wrote it."""

    kind: str
    model: Any
    tokenizer: Any
    model_config: Any  # a ModelConfig: what explicitly given architecture flags are checked against
    translate: Callable  # (model, tokenizer, texts, beam_size, alpha, max_length) -> outputs
    # (model, tokenizer, text, output) -> (src, tgt_in, to_tokens): the forward pass that --debug traces
    # and --explore draws
    example: Callable
    task: str = ""  # what it was trained on ("lm": a GPT language model; "" where it does not say)
    # a GPT continues a text (--prompt): (model, tokenizer, prompt, cfg) -> the new text; None: this
    # version cannot yet
    continue_text: Callable | None = None
    prompt_example: Callable | None = None  # (model, tokenizer, prompt) -> the same, of a --prompt

    @property
    def is_gpt(self) -> bool:
        return getattr(self.model_config, "arch", "transformer") == "gpt"

    @property
    def is_language_model(self) -> bool:
        """A GPT trained on --task lm: it continues texts (--prompt), it does not decode --source."""
        return self.is_gpt and self.task == "lm"


def load_checkpoint_for_decoding(
    path: str, device, fast: bool = True, trust_remote_code: bool = False
) -> Loaded:
    """The model of a .pt file or a save_pretrained folder, in eval mode on `device`; `fast`: with
    the speed-ups of utils/fast plugged in (--no-fast: the readable model); `trust_remote_code`:
    a folder may run the code it carries (--trust_remote_code)."""
    if checkpoint_kind(path) == "huggingface":
        hide_loading_bars()  # before transformers loads the weights
        from huggingface_version import encoder_inference as hf_encoder

        if hf_encoder.is_encoder_folder(path, trust_remote_code):  # BERT or ViT: it reads --source
            model, tokenizer = hf_encoder.load_hf_encoder(path, device, trust_remote_code)
        else:
            from huggingface_version import inference as hf

            model, tokenizer = hf.load_hf_for_inference(path, device, fast, trust_remote_code)
        return loaded_model(model, tokenizer)
    from pytorch_version import inference as pt

    model, tokenizer, data = pt.load_for_inference(path, device, fast)
    return loaded_model(model, tokenizer, pt.checkpoint_task(data))


def loaded_model(model, tokenizer, task: str = "") -> Loaded:
    """A model in memory, either version's, with its tokenizer, as a checkpoint of it would load:
    what decodes it, what --debug traces and what --explore draws. `task`: what a pytorch model was
    trained on (an HF model's config.json says)."""
    if getattr(model.config, "model_type", None) is not None:  # a transformers PreTrainedConfig
        from huggingface_version.convert import model_config_of

        if getattr(model.config, "arch", "transformer") in ENCODER_ONLY:
            from pytorch_version import encoder_inference as encoder

            return Loaded("huggingface", model, tokenizer, model.config, encoder.read, encoder.read_example)
        from huggingface_version import inference as hf

        # a GPT's folder (TutorialGPTForCausalLM): --source decodes a toy task's, --prompt continues text
        return Loaded("huggingface", model, tokenizer, model_config_of(model.config), hf.translate_hf,
                      hf.translation_example_hf, hf.hf_task(model, tokenizer), hf.continue_text_hf,
                      hf.prompt_example_hf)  # fmt: skip
    if model.config.arch in ENCODER_ONLY:  # it reads --source: a class, or its [MASK]s filled in
        from pytorch_version import encoder_inference as encoder

        return Loaded("pytorch", model, tokenizer, model.config, encoder.read, encoder.read_example, task)
    from pytorch_version import inference as pt

    return Loaded("pytorch", model, tokenizer, model.config, pt.translate, pt.translation_example, task,
                  partial(pt.continue_text, task=task), pt.prompt_example)  # fmt: skip
