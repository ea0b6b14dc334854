"""The toy tasks' character tokenizer, built with the `tokenizers` library as a PreTrainedTokenizerFast.

Same ids as utils.tokenizer.CharTokenizer (specials <pad> <s> </s> <unk> = 0..3, then the
alphabet in sorted order), so the two versions read each other's data and weights:

    normalizer      none
    pre-tokenizer   Split on the empty pattern: every character is its own piece
    model           WordLevel: piece -> id, <unk> for characters outside the alphabet
    post-processor  append </s> (the encoder input ends with EOS, as in utils.data)
    decoder         Fuse: join the characters back without spaces
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from utils.tokenizer import EOS_ID, SPECIALS, CharTokenizer


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
    """The fast twin of a utils.tokenizer.CharTokenizer (same alphabet, same ids)."""
    return char_tokenizer_fast(tokenizer.alphabet)
