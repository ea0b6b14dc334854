"""Translation data: the corpus loader's errors, normalisation, BPE round trips, token batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from utils.data.batching import TokenBatchSampler, padded_size, padding_ratio
from utils.data.bpe import BPETokenizer, SeparateVocabTokenizer, train_bpe
from utils.data.corpus import load_parallel, normalize, read_lines, read_parallel, tokenizers_normalizer
from utils.data.tokenizer import tokenizer_from_dict
from utils.runtime.config import RunConfig, UserError
from utils.training.metrics import translation_scores

MULTI30K = ROOT.parent / "shared/data/multi30k"
needs_multi30k = pytest.mark.skipif(
    not (MULTI30K / "train.de").is_file(), reason=f"the shared Multi30k copy is not at {MULTI30K}"
)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    write(tmp_path, "train.de", "Ein Mann.\nZwei Hunde spielen.\n  \nEine Frau  liest.\n")
    write(tmp_path, "train.en", "A man.\nTwo dogs play.\nAn empty source.\nA woman reads.\n")
    write(tmp_path, "val.de", "Ein Hund.\n")
    write(tmp_path, "val.en", "A dog.\n")
    return tmp_path


# ---- loading and its errors ---------------------------------------------------------------------
def test_load_parallel_normalises_and_drops_empty_pairs(corpus, caplog):
    with caplog.at_level("INFO"):
        pairs = load_parallel(corpus, "train", "de", "en")
    assert pairs == [("Ein Mann.", "A man."), ("Zwei Hunde spielen.", "Two dogs play."),
                     ("Eine Frau liest.", "A woman reads.")]  # fmt: skip
    assert "dropped 1 of 4 pairs" in caplog.text
    assert load_parallel(corpus, "train", "de", "en", max_lines=2) == pairs[:2]
    kept = read_parallel(corpus / "train.de", corpus / "train.en", drop_empty=False)
    assert len(kept) == 4 and kept[2] == ("", "An empty source.")  # a test set keeps its lines


def test_missing_file_names_it_and_the_expected_layout(corpus):
    (corpus / "val.en").unlink()
    with pytest.raises(UserError, match=r"val\.en not found: --data_dir must hold train\.de, train\.en"):
        load_parallel(corpus, "val", "de", "en")
    with pytest.raises(UserError, match="is not a folder"):
        load_parallel(corpus / "nowhere", "train", "de", "en")


def test_mismatched_line_counts(corpus):
    write(corpus, "val.en", "A dog.\nOne line too many.\n")
    with pytest.raises(UserError, match=r"val\.de has 1 lines but .*val\.en has 2: .*aligned line by line"):
        load_parallel(corpus, "val", "de", "en")


def test_empty_file(corpus):
    write(corpus, "val.de", "\n \n")
    with pytest.raises(UserError, match=r"val\.de is empty"):
        load_parallel(corpus, "val", "de", "en")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_undecodable_bytes_name_the_file_and_the_line(corpus, bom):
    write(corpus, "train.en", bom + "A man.\nTwo dogs.\nA caf\xe9.\n".encode("latin-1"))
    with pytest.raises(UserError) as err:
        load_parallel(corpus, "train", "de", "en")
    message = str(err.value)
    assert "train.en line 3: not valid UTF-8 (byte 0xe9" in message and "\n" not in message


def test_only_newline_ends_a_line(tmp_path):
    path = write(tmp_path, "x.en", "one\u2028still one\r\ntwo\n")
    assert read_lines(path) == ["one\u2028still one", "two"]


def test_normalize_is_nfc_and_whitespace_and_matches_the_tokenizers_normalizer():
    samples = ["  a\u0308rger\t im\u00a0 Bu\u0308ro ", "x\r\ny", "plain"]
    assert normalize(samples[0]) == "ärger im Büro"
    backend = tokenizers_normalizer()
    assert [backend.normalize_str(s) for s in samples] == [normalize(s) for s in samples]


# ---- flags ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, fragment",
    [
        (dict(task="translation"), "--task translation needs --data_dir DIR, a folder with train.de"),
        (dict(task="translation", data_dir="d", src_lang="en"), "src_lang and tgt_lang must differ"),
        (dict(data_dir="d"), "--data_dir applies to --task translation only"),
        (
            dict(task="translation", data_dir="d", version="both"),
            "translation needs --version pytorch or huggingface",
        ),
        (
            dict(task="translation", data_dir="d", version="huggingface", separate_vocab=True),
            "--separate_vocab",
        ),
        (dict(evaluate=True), "--evaluate needs --checkpoint PATH and --test_prefix PREFIX"),
        (dict(test_prefix="t"), "--test_prefix is used by --evaluate"),
        (dict(max_tokens=-1), "max_tokens must be >= 0"),
        (dict(task="translation", data_dir="d", vocab_size=10), "vocab_size must be at least 50"),
    ],
)
def test_translation_flag_errors(flags, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        RunConfig(**flags)


def test_translation_shares_embeddings_unless_the_vocabularies_are_separate():
    cfg = RunConfig(task="translation", data_dir="d")
    assert cfg.share_embeddings and cfg.model_config(100, 100).share_embeddings
    assert not RunConfig(task="translation", data_dir="d", separate_vocab=True).share_embeddings
    assert not RunConfig().share_embeddings  # the toy tasks keep their two embeddings


# ---- BPE --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi30k_pairs():
    if not (MULTI30K / "train.de").is_file():
        pytest.skip(f"the shared Multi30k copy is not at {MULTI30K}")
    return load_parallel(MULTI30K, "train", "de", "en", max_lines=2000)


@pytest.fixture(scope="module")
def bpe(multi30k_pairs) -> BPETokenizer:
    return train_bpe(multi30k_pairs, 1000)


def test_bpe_round_trip_reproduces_the_normalised_text(bpe, multi30k_pairs):
    texts = [text for pair in multi30k_pairs[:500] for text in pair]
    assert all(bpe.decode(bpe.encode(t)) == t for t in texts)
    raw = "  Ein  Mann fährt\tFahrrad. "
    ids = bpe.encode(raw)
    assert ids[-1] == bpe.eos_id and bpe.decode(ids) == normalize(raw) == "Ein Mann fährt Fahrrad."
    assert bpe.tokens(ids)[:2] == ["▁Ein", "▁Mann"] and bpe.tokens(ids)[-2:] == [".", "</s>"]
    assert bpe.encode(raw, add_eos=False) == ids[:-1] and bpe.encode_batch([raw]) == [ids]
    assert bpe.decode([bpe.bos_id, *ids, 5, 6]) == "Ein Mann fährt Fahrrad."  # stops at EOS


def test_bpe_specials_and_vocabulary(bpe):
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id, bpe.unk_id) == (0, 1, 2, 3)
    assert bpe.tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    assert bpe.vocab_size == len(bpe) == bpe.src_vocab_size == 1000
    assert bpe.decode(bpe.encode("Preis: 5 €, ñ")) == "Preis: 5 €, ñ"  # in the base alphabet
    assert bpe.unk_id in bpe.encode("☃")  # never seen: <unk>, dropped when decoding
    assert bpe.decode(bpe.encode("a ☃ b")) == "a  b"  # the <unk> is dropped, its space stays


def test_bpe_survives_the_checkpoint_dict(bpe):
    data = bpe.to_dict()
    assert data["type"] == "bpe" and isinstance(data["tokenizer"], str)  # plain types: weights_only loads
    restored = tokenizer_from_dict(data)
    assert isinstance(restored, BPETokenizer)
    text = "Zwei junge, weiße Männer sind im Freien."
    assert restored.encode(text) == bpe.encode(text) and restored.decode(bpe.encode(text)) == text
    with pytest.raises(UserError, match="unreadable"):
        tokenizer_from_dict({"type": "bpe", "tokenizer": "{not json"})


@pytest.mark.parametrize("byte_level", [False, True])
def test_a_text_without_spaces_is_learnt_in_pieces_and_comes_back_whole(byte_level):
    """One 100,000-character run with no space (a minified file, a text with no word breaks): BPE
    learns from pieces of at most MAX_PIECE characters (a whole-run "word" made its training grow with
    the square of its length: 27 s for 200,000 characters), and the text still decodes as it was."""
    from utils.data.bpe import MAX_PIECE

    text = "abcab" * 20_000
    tokenizer = BPETokenizer.train([text], vocab_size=300, byte_level=byte_level)
    assert max(len(token) for token in tokenizer.id_to_token) <= MAX_PIECE
    assert tokenizer.decode(tokenizer.encode(text[:1000])) == text[:1000]


def test_separate_vocabularies(multi30k_pairs):
    pair = train_bpe(multi30k_pairs[:500], 300, separate=True)
    assert isinstance(pair, SeparateVocabTokenizer) and (pair.src_vocab_size, pair.tgt_vocab_size) == (
        300,
        300,
    )
    assert pair.encode("Ein Hund.") == pair.source.encode("Ein Hund.")
    assert pair.decode(pair.target.encode("A dog.")) == "A dog."
    restored = tokenizer_from_dict(pair.to_dict())
    assert restored.source.encode("Ein Hund.") == pair.source.encode("Ein Hund.")
    assert restored.target.tokens(restored.target.encode("A dog.")) == pair.target.tokens(
        pair.target.encode("A dog.")
    )


def test_fast_tokenizer_twin_gives_the_same_ids_and_text(bpe, multi30k_pairs, tmp_path):
    from transformers import AutoTokenizer

    from huggingface_version.tokenization import to_fast_tokenizer

    fast = to_fast_tokenizer(bpe)
    assert len(fast) == bpe.vocab_size
    sources, targets = zip(*multi30k_pairs[:50])
    enc = fast(list(sources), text_target=list(targets))
    assert enc["input_ids"] == bpe.encode_batch(list(sources)) and enc["labels"] == bpe.encode_batch(
        list(targets)
    )
    fast.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert [loaded.decode(ids, skip_special_tokens=True) for ids in enc["labels"]] == list(targets)
    with pytest.raises(UserError, match="one tokenizer for both languages"):
        to_fast_tokenizer(train_bpe(multi30k_pairs[:100], 100, separate=True))


# ---- batching ---------------------------------------------------------------------------------
def test_token_batches_respect_max_tokens_cover_everything_and_cut_padding():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 60, (2000,), generator=g).tolist()
    tgt = [max(2, s + d) for s, d in zip(src, torch.randint(-4, 5, (2000,), generator=g).tolist())]
    sampler = TokenBatchSampler(src, tgt, max_tokens=600, generator=torch.Generator().manual_seed(1))
    epoch1, epoch2 = list(sampler), list(sampler)
    for batches in (epoch1, epoch2):
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(2000))
        assert all(padded_size(src, tgt, b) <= 600 for b in batches)
    assert epoch1 != epoch2  # a new order every epoch...
    again = TokenBatchSampler(src, tgt, max_tokens=600, generator=torch.Generator().manual_seed(1))
    assert list(again) == epoch1  # ...fixed by the seed
    mean_size = round(2000 / len(sampler))
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(2)).tolist()
    random_batches = [perm[i : i + mean_size] for i in range(0, 2000, mean_size)]
    bucketed, random_ratio = padding_ratio(src, tgt, epoch1), padding_ratio(src, tgt, random_batches)
    assert bucketed < 0.1 < 0.3 < random_ratio, (bucketed, random_ratio)


def test_preview_does_not_draw_from_the_generator_and_long_examples_get_their_own_batch():
    sampler = TokenBatchSampler(
        [5, 5, 50, 5], [5, 5, 80, 5], max_tokens=20, generator=torch.Generator().manual_seed(3)
    )
    preview = sampler.preview()
    assert preview == list(sampler)
    assert [2] in preview  # 80 tokens > max_tokens: alone
    ordered = TokenBatchSampler([9, 3, 6], [9, 3, 6], max_tokens=100, shuffle=False)
    assert list(ordered) == [[1, 2, 0]]  # evaluation: sorted by length, the same every time


def test_sacrebleu_scores_a_reference_against_itself_as_100():
    refs = ["A man rides a bike.", "Two dogs play in the snow.", "Eine Frau liest ein Buch."]
    scores = translation_scores(refs, refs)
    assert scores["bleu"] == scores["lowercase_bleu"] == scores["chrf"] == 100.0
    assert scores["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert "case:lc" in scores["signatures"]["lowercase_bleu"]
    lower = translation_scores([r.lower() for r in refs], refs)
    assert lower["lowercase_bleu"] == 100.0 > lower["bleu"]


def test_time_budget_stops_before_an_epoch_that_would_not_fit():
    from utils.training.recipe import out_of_time

    assert not out_of_time(0, 1e9, 3)  # no budget
    assert not out_of_time(10, 240, 2)  # 4 min done, 2 min an epoch: 6 < 10
    assert out_of_time(10, 510, 3)  # 8.5 min done, 2.8 min an epoch: 11.3 > 10
