"""The toolkit's tokenizers as PreTrainedTokenizerFast objects, built with the `tokenizers` library.

Translation's BPE tokenizer (utils/data/bpe.py) is already a `tokenizers.Tokenizer`: `from_bpe_tokenizer`
wraps a copy of it. The character tokenizer (toy tasks, and a language model's text) is rebuilt here:

Same ids as utils.data.tokenizer.CharTokenizer (specials <pad> <s> </s> <unk> = 0..3, then the
alphabet in sorted order), so the two versions read each other's data and weights:

    normalizer      none: every character, newlines, tabs and spaces included, is kept as it is
    pre-tokenizer   Split on the empty pattern: every character is its own piece (any unicode)
    model           WordLevel: piece -> id, <unk> for characters outside the alphabet
    post-processor  what the model's input ends with (`append`): </s> for the encoder-decoder
                    (the encoder input ends with EOS, as in utils.data.tasks), <s> for a GPT's toy
                    prompt (BOS separates it from the completion), nothing for a language model's text
    decoder         Fuse: join the characters back without spaces, so decode(encode(text)) == text

The two families pad differently: the encoder-decoder on the right (the encoder masks the pads), a
decoder-only GPT on the left (`gpt_tokenizer_fast`), so that every row's last token is real and
`generate` continues each row from its own end.

BERT's vocabulary (`encoder_tokenizer_fast`) has three specials more, ENCODER_SPECIALS' [CLS] [SEP] [MASK]
(ids 4..6), and its post-processor frames each text as utils.data does, `[CLS] text [SEP]`; "[MASK]"
written in a text is one token (a special token is matched before the text is split into characters),
which is what `pipeline("fill-mask")` writes where the model must guess.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from utils.data.tokenizer import BOS_ID, ENCODER_SPECIALS, EOS_ID, SPECIALS, CharTokenizer
from utils.runtime.config import UserError

PAD, BOS, EOS, UNK = SPECIALS


def _ending_with(token: str | None) -> processors.PostProcessor | None:
    """A post-processor that appends `token` to each text (a pair: to each of the two); None: nothing."""
    if token is None:
        return None
    special = [(token, {BOS: BOS_ID, EOS: EOS_ID}[token])]
    return processors.TemplateProcessing(
        single=f"$A {token}", pair=f"$A {token} $B {token}", special_tokens=special
    )


def _wrap(backend: Tokenizer, padding_side: str, **extra) -> PreTrainedTokenizerFast:
    """The PreTrainedTokenizerFast around `backend` with the four specials (`extra`: BERT's, ...)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,  # never touch the spaces: the decoders restore them exactly
        **extra,
    )


def char_tokenizer_fast(
    alphabet: str, append: str | None = EOS, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """A fast tokenizer over `alphabet`; `tokenizer(text, text_target=...)` gives input_ids and labels.

    `append`: the special token each encoded text ends with: "</s>" (EOS, the encoder-decoder's),
    "<s>" (BOS, a GPT's toy-task prompt) or None (a language model's text, as it is).
    """
    vocab = {token: i for i, token in enumerate(list(SPECIALS) + sorted(set(alphabet)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.post_processor = _ending_with(append)
    backend.decoder = decoders.Fuse()
    return _wrap(backend, padding_side)


def from_char_tokenizer(tokenizer: CharTokenizer) -> PreTrainedTokenizerFast:
    """The fast twin of a utils.data.tokenizer.CharTokenizer (same alphabet, same ids; a BERT's, with
    ENCODER_SPECIALS: encoder_tokenizer_fast)."""
    if tokenizer.specials == ENCODER_SPECIALS:
        return encoder_tokenizer_fast(tokenizer)
    return char_tokenizer_fast(tokenizer.alphabet)


def from_bpe_tokenizer(
    tokenizer, append: str | None = EOS, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """The fast twin of a utils.data.bpe.BPETokenizer: the same normalizer, BPE merges, ids and decoder
    (Metaspace, or byte-level for a language model's lossless BPE), plus the post-processor that
    appends `append` (</s> by default, as utils.data.tasks does for encoder inputs and labels)."""
    backend = Tokenizer.from_str(tokenizer.backend.to_str())  # a copy: the original stays as it is
    backend.post_processor = _ending_with(append)
    return _wrap(backend, padding_side)


def gpt_tokenizer_fast(tokenizer, prompt_separator: bool = False) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a decoder-only GPT's folder, for a CharTokenizer (any text: newlines,
    punctuation, any unicode) or a byte-level BPETokenizer: same ids, padding on the left.

    `prompt_separator`: a toy task's GPT reads `prompt <s>` and continues with the completion
    (pytorch_version's format: prompt, BOS, completion, EOS), so each prompt gets BOS appended; a
    language model continues the text itself (False: nothing is added).
    """
    append = BOS if prompt_separator else None
    if isinstance(tokenizer, CharTokenizer):
        return char_tokenizer_fast(tokenizer.alphabet, append=append, padding_side="left")
    if hasattr(tokenizer, "backend"):
        return from_bpe_tokenizer(tokenizer, append=append, padding_side="left")
    raise UserError(f"no Hugging Face tokenizer for a GPT with a {type(tokenizer).__name__}")


def to_fast_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The PreTrainedTokenizerFast for a tokenizer of utils.data.tasks.load_task_data (char or shared BPE)."""
    if isinstance(tokenizer, CharTokenizer):
        return from_char_tokenizer(tokenizer)
    if getattr(tokenizer, "shared", False) and hasattr(tokenizer, "backend"):
        return from_bpe_tokenizer(tokenizer)
    raise UserError(
        f"the Hugging Face version needs one tokenizer for both languages, got {type(tokenizer).__name__}"
    )


def encoder_tokenizer_fast(tokenizer: CharTokenizer) -> PreTrainedTokenizerFast:
    """The fast twin of a BERT's CharTokenizer (ENCODER_SPECIALS, then the alphabet: the same ids), which
    encodes a text as `[cls_id, *chars, sep_id]` (a pair: `[CLS] a [SEP] b [SEP]`) and pads on the right."""
    if not isinstance(tokenizer, CharTokenizer) or tokenizer.specials != ENCODER_SPECIALS:
        raise UserError(f"a BERT reads characters with the specials {', '.join(ENCODER_SPECIALS)}; got "
                        f"{type(tokenizer).__name__} {getattr(tokenizer, 'specials', '')}")  # fmt: skip
    cls, sep = ENCODER_SPECIALS[4], ENCODER_SPECIALS[5]
    backend = Tokenizer(models.WordLevel(dict(tokenizer.token_to_id), unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B {sep}",
        special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)],
    )
    backend.decoder = decoders.Fuse()
    # padding on the right: the encoder masks the pads wherever they are; no token types: one segment
    return _wrap(backend, "right", cls_token=cls, sep_token=sep, mask_token=ENCODER_SPECIALS[6],
                 model_input_names=["input_ids", "attention_mask"])  # fmt: skip
