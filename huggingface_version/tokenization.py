"""The toolkit's tokenizers as PreTrainedTokenizerFast objects, built with the `tokenizers` library.

Translation's BPE tokenizer (utils/data/bpe.py) is already a `tokenizers.Tokenizer`: `from_bpe_tokenizer`
wraps a copy of it. The toy tasks' character tokenizer is rebuilt here:

Same ids as utils.data.tokenizer.CharTokenizer (specials <pad> <s> </s> <unk> = 0..3, then the
alphabet in sorted order), so the two versions read each other's data and weights:

    normalizer      none
    pre-tokenizer   Split on the empty pattern: every character is its own piece
    model           WordLevel: piece -> id, <unk> for characters outside the alphabet
    post-processor  append </s> (the encoder input ends with EOS, as in utils.data.tasks)
    decoder         Fuse: join the characters back without spaces
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from utils.data.tokenizer import EOS_ID, SPECIALS, CharTokenizer
from utils.runtime.config import UserError


def char_tokenizer_fast(alphabet: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer over `alphabet`; `tokenizer(text, text_target=...)` gives input_ids and labels."""
    pad, bos, eos, unk = SPECIALS
    vocab = {token: i for i, token in enumerate(list(SPECIALS) + sorted(set(alphabet)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, EOS_ID)]
    )
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        clean_up_tokenization_spaces=False,  # characters, not words: never touch the spaces
    )


def from_char_tokenizer(tokenizer: CharTokenizer) -> PreTrainedTokenizerFast:
    """The fast twin of a utils.data.tokenizer.CharTokenizer (same alphabet, same ids)."""
    return char_tokenizer_fast(tokenizer.alphabet)


def from_bpe_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The fast twin of a utils.data.bpe.BPETokenizer: the same normalizer, BPE merges, ids and decoder,
    plus the post-processor that appends </s>, as utils.data.tasks does for encoder inputs and labels."""
    pad, bos, eos, unk = SPECIALS
    backend = Tokenizer.from_str(tokenizer.backend.to_str())  # a copy: the original stays as it is
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        clean_up_tokenization_spaces=False,  # the Metaspace decoder already restores the spaces
    )


def to_fast_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The PreTrainedTokenizerFast for a tokenizer of utils.data.tasks.load_task_data (char or shared BPE)."""
    if isinstance(tokenizer, CharTokenizer):
        return from_char_tokenizer(tokenizer)
    if getattr(tokenizer, "shared", False) and hasattr(tokenizer, "backend"):
        return from_bpe_tokenizer(tokenizer)
    raise UserError(
        f"the Hugging Face version needs one tokenizer for both languages, got {type(tokenizer).__name__}"
    )
