"""Parallel text corpora read from plain-text files: `DIR/{split}.{lang}`, one sentence per line.

Line i of `train.de` is the translation of line i of `train.en`. The toolkit never downloads
a corpus: `--data_dir` points at a local folder, and every problem with it (a missing file,
files of different lengths, an empty file, bytes that are not UTF-8) stops the run with one
line naming the file and, where it applies, the line.

All text, training data, references and `--source` input alike, goes through `normalize`,
the one place where text is changed before it is tokenised.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

from utils.runtime.config import UserError

logger = logging.getLogger(__name__)

Pair = tuple[str, str]
_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Unicode NFC, whitespace runs (tabs, non-breaking spaces, CR) to one space, ends trimmed.

    NFC composes characters that have two encodings (`a` + combining diaeresis and the single
    code point `ä` become the same ids); collapsing whitespace keeps the subword tokenizer from
    learning tokens for "two spaces". The BPE tokenizer (utils/data/bpe.py) applies the same rule
    through `tokenizers_normalizer`, so raw `--source` text is treated like training text.
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def tokenizers_normalizer():
    """`normalize` as a `tokenizers` normalizer, for the tokenizer files the HF version saves."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )


def read_text(path: str | Path, expected: str = "one sentence per line") -> str:
    """The text of a UTF-8 file (a BOM is allowed), with one-line errors naming the file.

    A missing file, a folder, bytes that are not UTF-8 (the line, the byte and its column) and
    a file with nothing but whitespace each stop the run; `expected` says what the file should hold.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found" + (f" ({path} is a folder)" if path.is_dir() else ""))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raw, offset = err.object, err.start  # after a BOM, if there is one
        line = raw.count(b"\n", 0, offset) + 1
        column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
        raise UserError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{raw[offset]:02x} at byte column {column}); "
            "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from err
    if not text.strip():
        raise UserError(f"{path} is empty: expected {expected}")
    return text


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is allowed), with `read_text`'s one-line errors.

    Only "\\n" ends a line (with an optional "\\r" before it): `str.splitlines` would also split
    at characters such as U+2028 inside a sentence and break the alignment of the two files.
    """
    lines = read_text(path).split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path, drop_empty: bool = True) -> list[Pair]:
    """Aligned (source, target) pairs from two files, both sides normalised.

    With `drop_empty`, pairs whose source or target is empty after normalising are left out
    and counted in the log; without, they are kept (a test set keeps its line numbers).
    """
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise UserError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}: "
            "the two files must be aligned line by line"
        )
    pairs = [(normalize(s), normalize(t)) for s, t in zip(src_lines, tgt_lines)]
    if drop_empty:
        kept = [(s, t) for s, t in pairs if s and t]
        if len(kept) < len(pairs):
            logger.info(
                "%s / %s: dropped %d of %d pairs whose source or target is empty after trimming",
                src_path, tgt_path, len(pairs) - len(kept), len(pairs),
            )  # fmt: skip
        if not kept:
            raise UserError(f"{src_path} and {tgt_path} hold no pair with text on both sides")
        pairs = kept
    return pairs


def load_parallel(
    data_dir: str | Path, split: str, src_lang: str, tgt_lang: str, max_lines: int = 0
) -> list[Pair]:
    """`data_dir/{split}.{src_lang}` and `.{tgt_lang}` as normalised pairs; `max_lines` > 0 keeps
    the first that many pairs (after dropping empty ones)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"--data_dir {data_dir} is not a folder")
    paths = [data_dir / f"{split}.{lang}" for lang in (src_lang, tgt_lang)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        expected = ", ".join(f"{s}.{lang}" for s in ("train", "val") for lang in (src_lang, tgt_lang))
        raise UserError(
            f"{missing[0]} not found: --data_dir must hold {expected} (aligned UTF-8 text, one sentence "
            "per line; the toolkit does not download corpora)"
        )
    pairs = read_parallel(*paths)
    return pairs[:max_lines] if max_lines > 0 else pairs
