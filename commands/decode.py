"""--checkpoint PATH with --source TEXT, --prompt TEXT or --interactive: decode or continue text with a
trained model.

Text reaches the model from places a user controls, the --source and --prompt flags and stdin; all are
checked to be UTF-8 here, so bad bytes end with one error line that says where they are, never a
UnicodeError traceback from deep inside a tokenizer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from commands.checkpoints import load_checkpoint_for_decoding
from commands.explore import explore_input
from utils.observe.trace_printer import trace_example
from utils.runtime.compatibility import mismatched_flags
from utils.runtime.config import RunConfig, UserError, resolve_device


def bad_byte(err: UnicodeError) -> str:
    """Where text stopped being UTF-8: 'byte 0xe9 at position 12'."""
    bad = err.object[err.start]
    bad = bad if isinstance(bad, int) else ord(bad) - 0xDC00  # argv keeps bad bytes as U+DCxx
    return f"byte 0x{bad:02x} at position {err.start}"


def utf8(text: str, what: str) -> str:
    """`text` unchanged if it encodes as UTF-8 (argv smuggles bad bytes in as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UserError(f"{what} is not valid UTF-8 text: {bad_byte(err)}") from err
    return text


def input_lines() -> Iterator[str]:
    """stdin line by line; a line that is not UTF-8 ends the session with one error line."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)  # bytes where possible: decoded here, with a line number
    for number, line in enumerate(stream, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"input line {number} is not valid UTF-8 text: {bad_byte(err)}") from err
        yield line


def decode_with_checkpoint(cfg: RunConfig, given: frozenset = frozenset()) -> int:
    """--checkpoint PATH with --source, --prompt or --interactive: a .pt file (pytorch_version) or a
    save_pretrained folder (huggingface_version). Architecture flags given explicitly must
    match the checkpoint's; the others are read from it.

    A GPT trained on --task lm continues texts: --prompt TEXT, or each line of --interactive; any
    other checkpoint decodes --source TEXT or each line of --interactive (greedy or beam search)."""
    if ("prompt" in given or cfg.prompt) and not cfg.prompt.strip():
        raise UserError("empty --prompt: give some text for the model to continue")
    if not cfg.source and not cfg.interactive and not cfg.prompt:
        raise UserError("--checkpoint needs --source TEXT, --prompt TEXT or --interactive")
    utf8(cfg.source, "--source")
    utf8(cfg.prompt, "--prompt")
    loaded = load_checkpoint_for_decoding(
        cfg.checkpoint, resolve_device(cfg.device), cfg.fast, cfg.trust_remote_code
    )
    differences = mismatched_flags(cfg, given, loaded.model_config)
    if differences:
        raise UserError(f"checkpoint {cfg.checkpoint} does not fit the flags: {differences}")
    if cfg.prompt or (cfg.interactive and loaded.is_language_model):
        return _continue_texts(cfg, loaded)
    if cfg.source and loaded.is_language_model:
        raise UserError(f"{cfg.checkpoint} is a language model (--task lm): give it --prompt TEXT to "
                        "continue, not --source")  # fmt: skip
    model, tokenizer, translate = loaded.model, loaded.tokenizer, loaded.translate

    def decode(text: str) -> str:
        output = translate(model, tokenizer, [text], cfg.beam_size, cfg.length_penalty, cfg.max_length)[0]
        if cfg.debug:
            example = loaded.example(model, tokenizer, text, output)
            print(trace_example(model, *example, cfg.debug_layers, cfg.debug_heads))
        if cfg.explore:
            print(f"explorer: {explore_input(cfg.checkpoint, loaded, text, output)}")
        return output

    if cfg.interactive:
        print("Type an input and press Enter (Ctrl-D to quit).")
        for line in input_lines():
            if line.strip():
                print(decode(line.rstrip("\n")))
        return 0
    print(f"source: {cfg.source}\noutput: {decode(cfg.source)}")
    return 0


def _continue_texts(cfg: RunConfig, loaded) -> int:
    """--prompt TEXT (or, with a language model, each line of --interactive): print the prompt and
    what the GPT writes after it (pytorch_version/sampling.py; --seed makes it repeatable)."""
    if not loaded.is_gpt:
        arch = getattr(loaded.model_config, "arch", "transformer")
        what = "an encoder-decoder" if arch == "transformer" else f"an --arch {arch} model"
        raise UserError(f"--prompt needs an --arch gpt checkpoint; {cfg.checkpoint} is {what}: use "
                        "--source INPUT with it")  # fmt: skip
    if loaded.continue_text is None:  # the hook of commands/checkpoints.py
        raise UserError(f"--prompt with a {loaded.kind} checkpoint is not yet supported; use a "
                        "pytorch_version .pt checkpoint")  # fmt: skip
    model, tokenizer = loaded.model, loaded.tokenizer

    def write(prompt: str) -> None:
        if cfg.debug and loaded.prompt_example is not None:
            example = loaded.prompt_example(model, tokenizer, prompt)
            print(trace_example(model, *example, cfg.debug_layers, cfg.debug_heads))
        new = loaded.continue_text(model, tokenizer, prompt, cfg)
        print(prompt + new, flush=True)
        if cfg.explore:
            print(f"explorer: {explore_input(cfg.checkpoint, loaded, prompt, new, prompt=True)}")

    if cfg.prompt:
        write(cfg.prompt)
    if cfg.interactive:
        print("Type a prompt and press Enter (Ctrl-D to quit).")
        for line in input_lines():
            if line.strip():
                write(line.rstrip("\n"))
    return 0
