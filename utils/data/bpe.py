"""Byte-pair encoding (Sennrich et al., 2016) for real text, trained with the `tokenizers` library.

BPE starts from single characters and repeatedly merges the most frequent adjacent pair into
a new token until the vocabulary is full: frequent words end up as one token, rare ones as a
few pieces, and no word is out of vocabulary. The pipeline of one tokenizer:

    normalizer     utils.data.corpus.normalize: Unicode NFC, whitespace collapsed, ends trimmed
    pre-tokenizer  Metaspace: each space becomes "▁" glued to the next word (as SentencePiece
                   does), then punctuation is split off, so "Fahrrad." shares "▁Fahrrad"; a run of
                   more than MAX_PIECE (32) characters is cut into pieces of that length
    model          BPE merges learnt from the training text; <unk> for characters never seen
    decoder        Metaspace: join the pieces and turn "▁" back into spaces

so `decode(encode(text)) == normalize(text)` whenever every character of `text` is known.

A language model needs its text as it is: normalizing would turn every newline into a space.
`byte_level=True` builds GPT-2's pipeline instead (Radford et al., 2019): no normalizer, the
ByteLevel pre-tokenizer maps each UTF-8 byte to a printable character (a space is "Ġ", a newline
"Ċ"), the 256 bytes are the base alphabet, and the ByteLevel decoder maps them back, so
`decode(encode(text)) == text` for every text, newlines and all, and no token is ever <unk>.
Special tokens <pad> <s> </s> <unk> have ids 0..3, as in utils.data.tokenizer.CharTokenizer.

`BPETokenizer` is one vocabulary, shared by source and target by default (the paper's
"shared source-target vocabulary", section 5.1), which lets the model share its embeddings;
`SeparateVocabTokenizer` holds one per language (--separate_vocab).
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from utils.data.corpus import Pair, tokenizers_normalizer
from utils.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID
from utils.runtime.config import UserError

# Characters in the vocabulary even when the training text lacks them: ASCII and the Latin-1
# letters and signs, so a test sentence with a "ñ" or a "€" gets a token instead of <unk>.
BASE_ALPHABET = sorted(set(string.printable.strip() + "".join(map(chr, range(0xA1, 0x100))) + "–—‘’“”„…€"))


# The longest piece BPE learns from: a longer run without spaces (a URL, a minified file, a text with
# no spaces at all) is cut into pieces of this many characters first. BPE's training rescans each
# piece at every merge, so one 200,000-character "word" took 27 s to learn 300 tokens from (and grows
# with its square); words of real text are far shorter than this and are tokenized as before.
MAX_PIECE = 32
_PIECES = pre_tokenizers.Split(Regex(f".{{1,{MAX_PIECE}}}"), behavior="isolated")


def _new_backend(byte_level: bool = False) -> Tokenizer:
    backend = Tokenizer(models.BPE(unk_token=SPECIALS[UNK_ID]))
    if byte_level:  # text kept exactly as it is: no normalizer, every byte is a base token
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False),
                                                         _PIECES])  # fmt: skip
        backend.decoder = decoders.ByteLevel()
        return backend
    backend.normalizer = tokenizers_normalizer()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="always"), pre_tokenizers.Punctuation("isolated"), _PIECES]
    )
    backend.decoder = decoders.Metaspace(prepend_scheme="always")
    return backend


class BPETokenizer:
    """One BPE vocabulary with the toolkit's tokenizer interface (encode, decode, tokens, ids)."""

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    shared = True  # one vocabulary for both languages

    def __init__(self, backend: Tokenizer) -> None:
        for i, token in enumerate(SPECIALS):
            if backend.token_to_id(token) != i:
                raise UserError(f"a BPE tokenizer must have {token} at id {i}")
        self.backend = backend
        self.byte_level = isinstance(backend.decoder, decoders.ByteLevel)  # see the module docstring
        self.id_to_token = [backend.id_to_token(i) for i in range(backend.get_vocab_size())]

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, byte_level: bool = False
    ) -> BPETokenizer:
        """Learn merges from `texts` until there are `vocab_size` tokens (fewer if the text runs out).

        `byte_level`: GPT-2's lossless pipeline for a language model (see the module docstring).
        """
        alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else BASE_ALPHABET
        if byte_level and vocab_size < len(SPECIALS) + len(alphabet):
            raise UserError(
                f"a byte-level BPE vocabulary needs at least {len(SPECIALS) + len(alphabet)} tokens "
                f"({len(SPECIALS)} specials + {len(alphabet)} bytes), got vocab_size {vocab_size}"
            )
        backend = _new_backend(byte_level)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,  # a merge seen once is noise, not a subword
            special_tokens=list(SPECIALS),  # ids 0..3, in this order
            initial_alphabet=alphabet,
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    # one vocabulary serves both sides; SeparateVocabTokenizer has two
    @property
    def source(self) -> BPETokenizer:
        return self

    @property
    def target(self) -> BPETokenizer:
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    src_vocab_size = tgt_vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Text -> ids (normalised first), EOS appended unless `add_eos` is False."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ids + [EOS_ID] if add_eos else ids

    def encode_batch(self, texts: list[str], add_eos: bool = True) -> list[list[int]]:
        """`encode` for many texts at once (the Rust side uses every core)."""
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [e.ids + [EOS_ID] if add_eos else e.ids for e in encodings]

    def decode(self, ids) -> str:
        """Ids -> text, stopping at EOS and dropping the other specials (<unk> included).

        The Metaspace decoder leaves the space of the first "▁" in front, hence the strip; a
        byte-level text comes back exactly, its leading and trailing newlines included.
        """
        kept = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i >= len(SPECIALS):
                kept.append(i)
        text = self.backend.decode(kept, skip_special_tokens=True)
        return text if self.byte_level else text.strip()

    def tokens(self, ids) -> list[str]:
        """Ids -> subword strings such as "▁Fahr" "rad" (figure and --debug labels), specials included."""
        return [self.id_to_token[int(i)] for i in ids]

    def to_dict(self) -> dict:
        """Plain types only, so a checkpoint holding it still loads with weights_only=True."""
        return {"type": "bpe", "tokenizer": self.backend.to_str()}

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        if (
            not isinstance(data, dict)
            or data.get("type") != "bpe"
            or not isinstance(data.get("tokenizer"), str)
        ):
            raise UserError(f"not a BPE tokenizer description: {data!r:.80}")
        try:
            backend = Tokenizer.from_str(data["tokenizer"])
        except Exception as err:  # tokenizers raises its own Exception type for bad JSON
            raise UserError(f"the BPE tokenizer in the checkpoint is unreadable: {err}") from err
        return cls(backend)


class SeparateVocabTokenizer:
    """Two BPE vocabularies (--separate_vocab): `source` encodes inputs, `target` outputs.

    `encode` is the source side (what inference feeds the encoder), `decode` and `tokens` the
    target side (what the decoder produces); the embeddings cannot be shared.
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    shared = False

    def __init__(self, source: BPETokenizer, target: BPETokenizer) -> None:
        self.source, self.target = source, target
        self.encode, self.encode_batch = source.encode, source.encode_batch
        self.decode, self.tokens = target.decode, target.tokens
        self.id_to_token = target.id_to_token

    @property
    def src_vocab_size(self) -> int:
        return self.source.vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        return self.target.vocab_size

    vocab_size = tgt_vocab_size  # the output vocabulary, as for the Hugging Face configs

    def __len__(self) -> int:
        return self.vocab_size

    def to_dict(self) -> dict:
        return {"type": "bpe_pair", "source": self.source.to_dict(), "target": self.target.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SeparateVocabTokenizer:
        if not isinstance(data, dict) or data.get("type") != "bpe_pair":
            raise UserError(f"not a two-vocabulary BPE tokenizer description: {data!r:.80}")
        return cls(BPETokenizer.from_dict(data.get("source")), BPETokenizer.from_dict(data.get("target")))


def train_bpe(pairs: list[Pair], vocab_size: int, separate: bool = False):
    """A shared BPE vocabulary learnt from both sides of `pairs`, or one per side if `separate`."""
    if separate:
        source = BPETokenizer.train((s for s, _ in pairs), vocab_size)
        return SeparateVocabTokenizer(source, BPETokenizer.train((t for _, t in pairs), vocab_size))
    return BPETokenizer.train((text for pair in pairs for text in pair), vocab_size)
