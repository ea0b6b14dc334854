"""explorer.html from the command line: every run writes one (with its training snapshots when it
tracked them), `--checkpoint PATH --source TEXT --explore` writes one for any input and keeps the
run's own page, and a misuse ends with one line and exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.robust_helpers import error_lines, main_in_process

pytestmark = pytest.mark.slow  # each trains a tiny model

TINY = [
    "--hidden_size",
    "32",
    "--num_layers",
    "2",
    "--num_heads",
    "4",
    "--ffn_size",
    "64",
    "--train_size",
    "200",
    "--eval_size",
    "20",
    "--epochs",
    "2",
    "--batch_size",
    "32",
    "--max_len",
    "5",
    "--quiet",
]


def page_data(path: Path) -> dict:
    return json.loads(
        re.search(r'id="explorer-data">(.*?)</script>', path.read_text(encoding="utf-8"), re.S)[1]
    )


def test_a_run_writes_its_page_with_the_training_snapshots(tmp_path, capsys):
    code, _, err = main_in_process(
        [
            "--version",
            "pytorch",
            "--task",
            "reversal",
            *TINY,
            "--track_internals",
            "--track_every",
            "3",
            "--output_dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    results = tmp_path / "results_pytorch"
    data = page_data(results / "explorer.html")
    assert data["family"] == "encoder-decoder" and len(data["examples"]) == 4
    assert data["evolution"]["steps"][0] == 1 and len(data["evolution"]["steps"]) >= 3
    assert data["report"] and data["report"]["decoder.1.cross_attn"][0]["pattern"]  # the run's analysis
    before = (results / "explorer.html").read_bytes()

    checkpoint = results / "checkpoints" / "best_model.pt"
    code, out, err = main_in_process(
        ["--checkpoint", str(checkpoint), "--source", "abcd", "--explore"], capsys
    )
    assert code == 0, err
    page = results / "explorer_input.html"
    assert f"explorer: {page}" in out
    data = page_data(page)
    assert data["examples"][0]["modules"]["encoder.0.self_attn"]["rows"][:4] == list("abcd")
    assert data["evolution"] is not None  # the run's snapshots come along from internals.json
    assert (results / "explorer.html").read_bytes() == before  # the run's own page is kept

    code, _, err = main_in_process(["--explore", "--source", "abcd"], capsys)
    assert code == 2 and error_lines(err) == [
        "main.py: error: --source, --interactive and --explore need --checkpoint PATH"
    ]


def test_a_hugging_face_run_writes_its_page_and_explores_an_input(tmp_path, capsys):
    code, _, err = main_in_process(
        ["--version", "huggingface", "--task", "reversal", *TINY, "--output_dir", str(tmp_path)], capsys
    )
    assert code == 0, err
    results = tmp_path / "results_huggingface"
    assert page_data(results / "explorer.html")["evolution"] is None  # no --track_internals
    code, _, err = main_in_process(["--checkpoint", str(results), "--source", "abc", "--explore"], capsys)
    assert code == 0, err
    rows = page_data(results / "explorer_input.html")["examples"][0]["modules"]["encoder.0.self_attn"]["rows"]
    assert rows[:3] == list("abc")


def test_a_bert_checkpoint_explores_what_it_reads(tmp_path, capsys):
    code, _, err = main_in_process(
        [
            "--version",
            "pytorch",
            "--arch",
            "bert",
            "--task",
            "palindrome",
            *TINY,
            "--output_dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    results = tmp_path / "results_pytorch"
    assert page_data(results / "explorer.html")["family"] == "encoder-only"
    checkpoint = results / "checkpoints" / "best_model.pt"
    code, _, err = main_in_process(["--checkpoint", str(checkpoint), "--source", "abba", "--explore"], capsys)
    assert code == 0, err
    data = page_data(results / "explorer_input.html")
    assert data["examples"][0]["modules"]["encoder.0.self_attn"]["rows"] == [
        "[CLS]",
        "a",
        "b",
        "b",
        "a",
        "[SEP]",
    ]
