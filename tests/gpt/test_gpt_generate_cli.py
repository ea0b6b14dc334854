"""`python main.py --checkpoint GPT.pt --prompt TEXT` (and --interactive) as a user runs it, in process.

The checkpoints are untrained tiny models saved as training saves them: a character-level language
model (its alphabet is a text's own characters), a GPT of the reversal task, an encoder-decoder.
"""

from __future__ import annotations

import io
import logging
import sys

import pytest

from commands.checkpoints import load_checkpoint_for_decoding
from pytorch_version.gpt import GPT
from pytorch_version.model import Transformer
from tests.factory import GPT as GPT_SETTINGS
from tests.factory import tiny_config
from tests.robust_helpers import assert_one_error_line, main_in_process
from utils.data.tasks import tokenizer_for_task
from utils.data.tokenizer import CharTokenizer
from utils.runtime.checkpoint import save_checkpoint

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nAy me!\n"
CONTEXT = 16


def _save(path, family, tokenizer, **overrides):
    import torch

    torch.manual_seed(0)
    vocab = dict(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size)
    settings = GPT_SETTINGS if family is GPT else {}
    save_checkpoint(path, family(tiny_config(**vocab, **settings, **overrides)), tokenizer)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("gpt_cli")
    return {
        "lm": _save(tmp / "lm.pt", GPT, CharTokenizer(TEXT), max_position=CONTEXT),
        "toy": _save(tmp / "toy.pt", GPT, tokenizer_for_task("reversal")),
        "seq2seq": _save(tmp / "seq2seq.pt", Transformer, tokenizer_for_task("reversal")),
    }


def _generate(checkpoints, capsys, *flags, which="lm"):
    return main_in_process(["--checkpoint", checkpoints[which], *flags, "--max_new_tokens", "12"], capsys)


def test_the_checkpoints_are_told_apart(checkpoints):
    kinds = {name: load_checkpoint_for_decoding(path, "cpu") for name, path in checkpoints.items()}
    assert kinds["lm"].is_language_model and kinds["lm"].task == "lm"
    assert kinds["toy"].is_gpt and not kinds["toy"].is_language_model
    assert kinds["toy"].task in ("copy", "reversal")  # one alphabet: the tokenizer cannot tell them apart
    assert not kinds["seq2seq"].is_gpt


def test_prompt_prints_the_prompt_and_its_continuation(checkpoints, capsys):
    code, out, err = _generate(checkpoints, capsys, "--prompt", "ROMEO:")
    assert code == 0, err
    assert out.startswith("ROMEO:") and out.endswith("\n")
    new = out[len("ROMEO:") : -1]
    assert len(new) == 12 and set(new) <= set(TEXT)  # characters of the text; no EOS stops it early


def test_the_same_seed_gives_the_same_text_and_another_seed_another(checkpoints, capsys):
    outputs = [_generate(checkpoints, capsys, "--prompt", "ROMEO:", "--seed", seed)[1] for seed in "778"]
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_no_do_sample_is_deterministic_whatever_the_seed(checkpoints, capsys):
    outputs = [_generate(checkpoints, capsys, "--prompt", "JULIET:", "--no-do_sample", "--seed", seed)[1]
               for seed in ("1", "2")]  # fmt: skip
    assert outputs[0] == outputs[1] and outputs[0].startswith("JULIET:")


@pytest.mark.parametrize("flags, fragment", [
    (["--top_p", "0"], "top_p"), (["--top_p", "1.5"], "top_p"), (["--temperature", "0"], "temperature"),
    (["--top_k", "-1"], "top_k"),
], ids=["top_p_0", "top_p_1.5", "temperature_0", "top_k_negative"])  # fmt: skip
def test_bad_sampling_settings_are_one_line_errors(checkpoints, capsys, flags, fragment):
    assert_one_error_line(*_generate(checkpoints, capsys, "--prompt", "ROMEO:", *flags), fragment)


@pytest.mark.parametrize("prompt", ["", "   \n"], ids=["empty", "blank"])
def test_an_empty_prompt_is_a_one_line_error(checkpoints, capsys, prompt):
    assert_one_error_line(*_generate(checkpoints, capsys, "--prompt", prompt), "empty --prompt")


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens_with_a_warning(checkpoints, capsys, caplog):
    prompt = "But soft, what light through yonder window breaks?"
    with caplog.at_level(logging.WARNING):
        code, out, err = _generate(checkpoints, capsys, "--prompt", prompt, "--no-do_sample")
    assert code == 0, err
    assert f"prompt of {len(prompt)} tokens: keeping its last {CONTEXT}" in caplog.text
    assert out.startswith(prompt)


def test_generating_past_the_context_works(checkpoints, capsys):
    code, out, err = main_in_process(["--checkpoint", checkpoints["lm"], "--prompt", "ROMEO:",
                                      "--max_new_tokens", str(3 * CONTEXT)], capsys)  # fmt: skip
    assert code == 0, err
    assert len(out) == len("ROMEO:") + 3 * CONTEXT + 1  # one character a token, and print's newline


def test_prompt_with_an_encoder_decoder_checkpoint_says_use_source(checkpoints, capsys):
    line = assert_one_error_line(*_generate(checkpoints, capsys, "--prompt", "abc", which="seq2seq"),
                                 "--prompt needs an --arch gpt checkpoint")  # fmt: skip
    assert "--source" in line


def test_source_with_a_language_model_says_use_prompt(checkpoints, capsys):
    assert_one_error_line(*_generate(checkpoints, capsys, "--source", "ROMEO:"), "--prompt")


def test_interactive_with_a_language_model_continues_each_line(checkpoints, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ROMEO:\n\nJULIET:\n"), encoding="utf-8"))
    code, out, err = _generate(checkpoints, capsys, "--interactive", "--no-do_sample")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Type a prompt")
    continued = [line for line in lines[1:] if line.startswith(("ROMEO:", "JULIET:"))]
    assert [line.split(":")[0] for line in continued] == ["ROMEO", "JULIET"]


def test_a_toy_task_gpt_decodes_source_and_interactive_like_the_encoder_decoder(checkpoints, capsys,
                                                                                 monkeypatch):  # fmt: skip
    code, out, err = _generate(checkpoints, capsys, "--source", "hello", which="toy")
    assert code == 0, err
    assert out.startswith("source: hello\noutput: ")
    monkeypatch.setattr(sys, "stdin", io.StringIO("abc\nxy\n"))
    code, out, err = _generate(checkpoints, capsys, "--interactive", "--beam_size", "2", which="toy")
    assert code == 0, err
    assert out.splitlines()[0].startswith("Type an input") and len(out.splitlines()) == 3


def test_debug_prints_the_trace_of_the_prompt(checkpoints, capsys):
    code, out, err = _generate(checkpoints, capsys, "--prompt", "ROMEO:", "--debug", "--no-do_sample")
    assert code == 0, err
    assert "layer 0" in out.lower() or "self_attn" in out
    assert out.rstrip("\n").splitlines()[-1].startswith("ROMEO:")  # the text comes after the trace
