"""A character tokenizer for the toy tasks: one id per character plus four specials.

Real text uses subwords instead (utils/data/bpe.py); `tokenizer_from_dict` rebuilds either kind
from the description a checkpoint stores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from utils.runtime.config import UserError

logger = logging.getLogger(__name__)

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3: PAD, BOS, EOS, UNK
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
# BERT's: [CLS] begins every input (a classifier reads its output), [SEP] ends it, [MASK] hides a token
# the masked LM must guess (ids 4..6 after the four above)
ENCODER_SPECIALS = (*SPECIALS, "[CLS]", "[SEP]", "[MASK]")


class CharTokenizer:
    """Maps each character of a fixed alphabet to an id; unknown characters map to UNK.

    `specials` are the ids before the characters: the four above, or ENCODER_SPECIALS for BERT.
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    shared = True  # one alphabet for sources and targets

    def __init__(self, alphabet: str, specials: tuple[str, ...] = SPECIALS) -> None:
        chars = sorted(set(alphabet))
        self.alphabet = "".join(chars)
        self.specials = tuple(specials)
        assert self.specials[:4] == SPECIALS, "PAD, BOS, EOS and UNK keep ids 0..3"
        self.id_to_token = list(self.specials) + chars
        self.token_to_id = {tok: i for i, tok in enumerate(self.id_to_token)}

    def special_id(self, token: str) -> int:
        """The id of a special such as "[MASK]"; -1 when this vocabulary has none."""
        return self.token_to_id[token] if token in self.specials else -1

    @property
    def cls_id(self) -> int:
        return self.special_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.special_id("[SEP]")

    @property
    def mask_id(self) -> int:
        return self.special_id("[MASK]")

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    src_vocab_size = tgt_vocab_size = vocab_size

    # the side that encodes sources and the one that encodes targets (utils.data.bpe has two kinds)
    @property
    def source(self) -> CharTokenizer:
        return self

    @property
    def target(self) -> CharTokenizer:
        return self

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = [self.token_to_id.get(ch, UNK_ID) for ch in text]
        return ids + [EOS_ID] if add_eos else ids

    def decode(self, ids) -> str:
        """Ids -> text, stopping at EOS and dropping the other specials."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i >= len(self.specials):
                out.append(self.id_to_token[i])
            elif i == UNK_ID:
                out.append("?")
        return "".join(out)

    def tokens(self, ids) -> list[str]:
        """Ids -> readable token strings (for figure labels), specials included."""
        return [self.id_to_token[int(i)] for i in ids]

    def to_dict(self) -> dict:
        extra = {"specials": list(self.specials)} if self.specials != SPECIALS else {}
        return {"type": "char", "alphabet": self.alphabet, **extra}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        valid = isinstance(data, dict) and data.get("type") == "char"
        specials = data.get("specials", list(SPECIALS)) if valid else None
        if (
            not valid
            or not isinstance(data.get("alphabet"), str)
            or specials not in (list(SPECIALS), list(ENCODER_SPECIALS))
        ):
            raise UserError(f"not a character tokenizer description: {data!r:.80}")
        return cls(data["alphabet"], tuple(specials))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read tokenizer file {path}: {err}") from err


def tokenizer_from_dict(data: dict):
    """Rebuild the tokenizer a checkpoint describes."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer.from_dict(data)
    if kind in ("bpe", "bpe_pair"):
        from utils.data.bpe import BPETokenizer, SeparateVocabTokenizer  # needs `tokenizers`; only here

        return (BPETokenizer if kind == "bpe" else SeparateVocabTokenizer).from_dict(data)
    if kind == "patches":  # a ViT's: how an image becomes tokens
        from utils.data.digits import PatchTokenizer

        return PatchTokenizer.from_dict(data)
    raise UserError(f"unknown tokenizer type {kind!r} in checkpoint")


def checked_prompt(ids: list[int], unk_id: int) -> list[int]:
    """A --prompt's ids, as either version encodes them: a warning for characters the vocabulary
    lacks (read as <unk>), a one-line error when nothing is left to continue."""
    unknown = sum(i == unk_id for i in ids)
    if unknown:
        logger.warning("%d character(s) of the prompt are not in the model's vocabulary: read as <unk>",
                       unknown)  # fmt: skip
    if not ids:
        raise UserError("--prompt encodes to no tokens: give some text for the model to continue")
    return ids
