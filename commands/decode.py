"""--checkpoint PATH with --source TEXT or --interactive: decode text with a trained model.

Text reaches the model from two places a user controls, the --source flag and stdin; both are
checked to be UTF-8 here, so bad bytes end with one error line that says where they are, never a
UnicodeError traceback from deep inside a tokenizer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from commands.checkpoints import load_checkpoint_for_decoding
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
    """--checkpoint PATH with --source or --interactive: a .pt file (pytorch_version) or a
    save_pretrained folder (huggingface_version). Architecture flags given explicitly must
    match the checkpoint's; the others are read from it."""
    if not cfg.source and not cfg.interactive:
        raise UserError("--checkpoint needs --source TEXT or --interactive")
    utf8(cfg.source, "--source")
    loaded = load_checkpoint_for_decoding(
        cfg.checkpoint, resolve_device(cfg.device), cfg.fast, cfg.trust_remote_code
    )
    differences = mismatched_flags(cfg, given, loaded.model_config)
    if differences:
        raise UserError(f"checkpoint {cfg.checkpoint} does not fit the flags: {differences}")
    model, tokenizer, translate = loaded.model, loaded.tokenizer, loaded.translate

    def decode(text: str) -> str:
        output = translate(model, tokenizer, [text], cfg.beam_size, cfg.length_penalty, cfg.max_length)[0]
        if cfg.debug:
            print(loaded.trace(model, tokenizer, text, output, cfg.debug_layers, cfg.debug_heads))
        return output

    if cfg.interactive:
        print("Type an input and press Enter (Ctrl-D to quit).")
        for line in input_lines():
            if line.strip():
                print(decode(line.rstrip("\n")))
        return 0
    print(f"source: {cfg.source}\noutput: {decode(cfg.source)}")
    return 0
