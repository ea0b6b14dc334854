"""Training the GPT from the CLI: a toy task learns as prompt and completion, a language model learns a
text, and every bad text file is a one-line error that damages nothing already saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main
from tests.conftest import ROOT

SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
TINY = ["--hidden_size", "32", "--ffn_size", "64", "--num_layers", "2", "--num_heads", "4", "--quiet",
        "--device", "cpu"]  # fmt: skip
LM = ["--arch", "gpt", "--task", "lm", "--context_length", "32", "--batch_size", "16", "--warmup_steps", "10"]


@pytest.fixture
def text_file(tmp_path) -> Path:
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")[:30000]
    else:  # a corpus of its own when ../shared is not beside the repository
        text = "".join(
            f"{w} the {v} of {w}.\n" for w in ("king", "queen", "lord") for v in ("crown", "hand") * 900
        )
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _summary(out: Path) -> dict:
    return json.loads((out / "results_pytorch" / "summary.json").read_text())


@pytest.mark.slow
def test_a_gpt_learns_the_copy_task_as_prompt_and_completion(tmp_path, single_thread):
    args = ["--arch", "gpt", "--task", "copy", "--seed", "0", "--train_size", "3000", "--eval_size", "200",
            "--min_len", "2", "--max_len", "4", "--dropout", "0", "--epochs", "8", "--batch_size", "32",
            "--warmup_steps", "200", "--checkpoint_average", "0", "--output_dir", str(tmp_path),
            *TINY]  # fmt: skip
    assert main.main(args) == 0
    summary = _summary(tmp_path)
    assert summary["final"]["eval_exact_match"] >= 0.85  # 0.945 measured
    assert summary["config"]["model"]["arch"] == "gpt"


def test_a_short_lm_run_goes_below_the_unigram_entropy(tmp_path, text_file, single_thread):
    args = [*LM, "--data_file", str(text_file), "--max_steps", "80", "--eval_every", "40", "--output_dir",
            str(tmp_path), *TINY]  # fmt: skip
    assert main.main(args) == 0
    summary = _summary(tmp_path)
    history = [json.loads(line) for line in (tmp_path / "results_pytorch/logs/metrics.jsonl").open()]
    assert [r["step"] for r in history] == [40, 80]  # paced by optimizer steps, an evaluation every 40
    assert summary["steps"] == 80
    assert summary["final"]["eval_loss"] < summary["data"]["unigram_entropy"]  # 3.00 < 3.28 measured
    assert summary["final"]["eval_bits_per_char"] == pytest.approx(
        summary["final"]["eval_loss"] * (summary["data"]["val_tokens"] - 1) / summary["data"]["val_chars"]
        / 0.6931471805599453, rel=1e-6
    )  # fmt: skip
    assert (tmp_path / "results_pytorch" / "checkpoints" / "best_model.pt").is_file()


def test_max_steps_not_a_multiple_of_eval_every_ends_on_the_step(tmp_path, text_file, single_thread):
    args = [*LM, "--data_file", str(text_file), "--max_steps", "25", "--eval_every", "10", "--output_dir",
            str(tmp_path), *TINY]  # fmt: skip
    assert main.main(args) == 0
    history = [json.loads(line) for line in (tmp_path / "results_pytorch/logs/metrics.jsonl").open()]
    assert [r["step"] for r in history] == [10, 20, 25]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"caf\xe9 au lait\n" * 50, "not valid UTF-8"),
        (b"too short", "needs at least 33"),
    ],
    ids=["empty", "whitespace", "latin-1", "shorter-than-a-context"],
)
def test_a_bad_text_file_is_one_line_and_damages_nothing(tmp_path, capsys, content, message):
    out = tmp_path / "results_pytorch"
    out.mkdir()
    (out / "summary.json").write_text('{"kept": true}')
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    code = main.main([*LM, "--data_file", str(bad), "--output_dir", str(tmp_path), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err
    assert (out / "summary.json").read_text() == '{"kept": true}'
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arch", "gpt", "--task", "lm"], "needs --data_file"),
        (["--task", "lm", "--data_file", "x.txt"], "--task lm is for --arch gpt"),
        (["--data_file", "x.txt"], "applies to --task lm and mlm only"),
        (["--arch", "gpt", "--task", "translation", "--data_dir", "x"], "is for --arch transformer"),
        (["--arch", "gpt", "--task", "lm", "--data_file", "x.txt", "--context_length", "1"], "at least 2"),
    ],
)
def test_family_flags_that_do_not_fit_are_one_line_errors(capsys, flags, message):
    assert main.main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
