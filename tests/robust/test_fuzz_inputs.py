"""Fuzzing the surfaces the toolkit reads, with hypothesis: generated inputs, not a list of cases.

    settings     any mapping of flag names to values of any type (flags and --config files meet
                 RunConfig.from_dict): a RunConfig, or one UserError line
    command line any sequence of the flags, their negations and values (numbers, words, nothing) as
                 argv: a RunConfig, or exit 2 with one `main.py: error:` line
    YAML files   any bytes as --config: a mapping, or one UserError line naming the file
    text files   any bytes (one huge line among them) as a language model's or a masked LM's corpus:
                 read, or one UserError line naming the file; never a traceback
    --source     any text read by an encoder-only model: its ids, or one UserError line

The property is the same everywhere: the toolkit either takes the input or says in one line what it
expected; any other exception fails the test. The seed is fixed (derandomize) and no example
database is kept, so CI runs the same cases each time; FUZZ_EXAMPLES sets the budget per surface
(60 by default; the `slow` variant runs 3x as many, test_fuzz_checkpoints.py's too).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from utils.runtime.config import RunConfig, UserError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
SKIPPED_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=SKIPPED_CHECKS)  # fmt: skip
FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(), max_size=3),
                   st.sampled_from(["gpt", "bert", "vit", "mlm", "lm", "digits", "palindrome", "cuda", "auto",
                                    "rotary", "learned", "mean", "cls", "0", "all", "x.txt"]))  # fmt: skip
TEXT_BYTES = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.builds(lambda a, b: a + b, st.sampled_from([b"\xef\xbb\xbf", b"\x00", b"\r\n", b"\xff\xfe", b""]),
              st.text(alphabet="ab \n\r\t\x00é", max_size=200).map(lambda t: t.encode("utf-8"))),
    st.builds(lambda piece, n, end: piece * n + end, st.sampled_from([b"a", b"ab ", "é".encode(), b"\xff"]),
              st.integers(10_000, 200_000), st.sampled_from([b"", b"\n", b"\n\n"])),  # one huge line
)  # fmt: skip


def one_line(err: UserError) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6))
def test_any_settings_are_a_config_or_one_line(values):
    try:
        RunConfig.from_dict(values)
    except UserError as err:
        one_line(err)


def _flag_words() -> list[str]:
    from main import build_parser

    return sorted({o for a in build_parser()._actions for o in a.option_strings if o not in ("-h", "--help")})


ARGV = st.lists(st.one_of(st.sampled_from(_flag_words()), st.sampled_from(["0", "-1", "2", "1e9", "nan", "x",
                                                                           "", "auto", "gpt", "lm"]),
                          st.text(max_size=6)), max_size=8)  # fmt: skip


@FUZZ
@given(ARGV)
def test_any_command_line_is_a_config_or_one_line(capsys, argv):
    from main import parse_config

    try:
        parse_config(argv)
    except UserError as err:
        one_line(err)
    except SystemExit as exit_:  # argparse: an unknown flag, a missing or mistyped value
        err = capsys.readouterr().err
        assert exit_.code == 2 and err.startswith("main.py: error: ") and err.count("\n") == 1, err


@FUZZ
@given(TEXT_BYTES)
def test_any_yaml_file_is_a_mapping_or_one_line(tmp_path_factory, data):
    from main import load_yaml

    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_bytes(data)
    try:
        assert isinstance(load_yaml(str(path)), dict)
    except UserError as err:
        one_line(err)
        assert str(path) in str(err)


@FUZZ
@given(TEXT_BYTES, st.sampled_from(["char", "bpe"]), st.booleans())
def test_any_text_file_is_a_corpus_or_one_line(tmp_path_factory, data, tokenizer, encoder_specials):
    from utils.data.lm import load_text_corpus
    from utils.data.tokenizer import ENCODER_SPECIALS, SPECIALS

    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_bytes(data)
    specials = ENCODER_SPECIALS if encoder_specials else SPECIALS
    try:
        corpus = load_text_corpus(str(path), "", tokenizer, 300, context_length=8, specials=specials)
    except UserError as err:
        one_line(err)
        assert str(path) in str(err)
        return
    assert len(corpus.train_ids) >= 9 and len(corpus.val_ids) >= 2


@pytest.fixture(scope="module")
def readers():
    from tests.factory import tiny_bert
    from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer

    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvw", ENCODER_SPECIALS)
    return tokenizer, tiny_bert(), tiny_bert(labels=("no", "yes"))


@FUZZ
@given(st.text(max_size=60).map(lambda t: t.replace("MASK", "[MASK]")))
def test_any_source_line_is_read_or_one_line(readers, text):
    from pytorch_version.encoder_inference import encode_input, read

    tokenizer, masked_lm, classifier = readers
    for model in (masked_lm, classifier):
        try:
            ids = encode_input(model, tokenizer, text)
        except UserError as err:
            one_line(err)
            continue
        assert ids[0, 0] == tokenizer.cls_id and ids.dtype == torch.long
        assert read(model, tokenizer, [text])[0]


@pytest.mark.slow
def test_the_long_budget(tmp_path):
    """The properties of this module and of test_fuzz_checkpoints.py with 3x the examples
    (FUZZ_EXAMPLES x 3: 180 per surface, 45 resumed Trainer checkpoints), in a process of its own."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FUZZ_EXAMPLES": str(3 * EXAMPLES), "OMP_NUM_THREADS": "1"}
    files = [__file__, str(Path(__file__).with_name("test_fuzz_checkpoints.py"))]
    select = ["-k", "not long_budget", "-m", "slow or not slow"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, *select]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]
