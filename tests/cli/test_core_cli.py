"""`python main.py` as a user runs it: bad input ends with one line on stderr and a non-zero exit
code, never a traceback; a tiny training run and decoding with its checkpoint succeed."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from tests.robust_helpers import error_lines, main_in_process
from utils.data.tasks import tokenizer_for_task
from utils.runtime.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow  # one CLI process per case, and a trained checkpoint

ROOT = Path(__file__).resolve().parents[2]
# one thread per process: several of these run at once on a small machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_error_lines_ignores_warnings():
    stderr = "x.py:3: UserWarning: careful\n  return f()\n\nmain.py: error: bad\n"
    assert error_lines(stderr) == ["main.py: error: bad"]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A valid checkpoint, broken ones and YAML configs for the error cases."""
    tmp = tmp_path_factory.mktemp("cli_files")
    torch.manual_seed(0)
    tokenizer = tokenizer_for_task("copy")
    cfg = tiny_config(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size)
    save_checkpoint(tmp / "valid.pt", Transformer(cfg), tokenizer)
    (tmp / "garbage.pt").write_bytes(random.Random(0).randbytes(3000))
    (tmp / "notes.txt").write_text("not a model\n")
    (tmp / "empty_folder").mkdir()
    data = torch.load(tmp / "valid.pt", weights_only=True)
    torch.save({**data, "model_config": {**data["model_config"], "hidden_size": 64}}, tmp / "mismatch.pt")
    torch.save({**data, "extra": _RunsCode(tmp / "PWNED")}, tmp / "evil.pt")
    (tmp / "unknown_key.yaml").write_text("epochs: 1\nlearning_rate_typo: 0.1\n")
    (tmp / "wrong_type.yaml").write_text("epochs: ten\n")
    (tmp / "not_a_mapping.yaml").write_text("- epochs\n- 3\n")
    (tmp / "bad_syntax.yaml").write_text("epochs: [1\n")
    return {p.stem: p for p in tmp.iterdir()} | {"dir": tmp}


TINY_RUN = ["--version", "pytorch", "--task", "copy", "--train_size", "200", "--eval_size", "20",
            "--epochs", "1", "--hidden_size", "32", "--num_heads", "4", "--num_layers", "1",
            "--ffn_size", "64", "--quiet"]  # fmt: skip

# (id, arguments with {placeholders} for files, a fragment the error line must hold);
# each of these starts a real `python main.py` process
ERROR_CASES = [
    ("heads_do_not_divide", ["--hidden_size", "100", "--num_heads", "3"], "divisible"),
    ("unknown_task", ["--task", "nope"], "nope"),
    ("missing_checkpoint", ["--checkpoint", "missing.pt", "--source", "hi"], "not found"),
    ("zero_epochs", ["--epochs", "0"], "epochs"),
    ("negative_epochs", ["--epochs", "-1"], "epochs"),
    ("zero_beams", ["--beam_size", "0"], "beam_size"),
    ("cuda_without_gpu", [*TINY_RUN, "--device", "cuda", "--output_dir", "{dir}/cuda_run"], "cuda"),
    ("config_unknown_key", ["--config", "{unknown_key}"], "learning_rate_typo"),
    ("config_wrong_type", ["--config", "{wrong_type}"], "epochs"),
    ("source_without_checkpoint", ["--source", "x"], "--checkpoint"),
    ("empty_source", ["--checkpoint", "{valid}", "--source", ""], "--source"),
]
# more of the same, run in this process through main.main() to save a torch import each
IN_PROCESS_ERROR_CASES = [
    ("unknown_flag", ["--epoch", "3", "--colour", "red"], "colour"),
    ("not_a_number", ["--epochs", "three"], "epochs"),
    ("config_not_a_mapping", ["--config", "{not_a_mapping}"], "mapping"),
    ("config_bad_syntax", ["--config", "{bad_syntax}"], "YAML"),
    ("config_missing", ["--config", "{dir}/nope.yaml"], "nope.yaml"),
    ("blank_source", ["--checkpoint", "{valid}", "--source", "   "], "empty"),
    ("garbage_checkpoint", ["--checkpoint", "{garbage}", "--source", "hi"], "garbage.pt"),
    ("mismatched_checkpoint", ["--checkpoint", "{mismatch}", "--source", "hi"], "does not match"),
    ("checkpoint_with_code", ["--checkpoint", "{evil}", "--source", "hi"], "refusing"),
    ("checkpoint_neither", ["--checkpoint", "{notes}", "--source", "hi"], "notes.txt is not a checkpoint"),
    ("checkpoint_empty_folder", ["--evaluate", "--checkpoint", "{empty_folder}", "--test_prefix", "{dir}/t"],
     "no config.json in it"),
]  # fmt: skip


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    names = {k: str(v) for k, v in files.items()}
    return [a.format(**names) for a in args]


@pytest.fixture(scope="module")
def error_runs(files) -> dict[str, subprocess.CompletedProcess]:
    """All subprocess error cases, two at a time: each one mostly waits for `import torch`."""

    def run(case):
        case_id, args, _ = case
        return case_id, run_cli(*_fill(args, files), cwd=files["dir"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, ERROR_CASES))


def _assert_one_error_line(returncode: int, stdout: str, stderr: str, fragment: str) -> None:
    lines = error_lines(stderr)
    assert returncode != 0, (stdout, stderr)
    assert "Traceback" not in stderr + stdout, stderr
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    assert lines[0].startswith("main.py: error: ")
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case_id, args, fragment", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_input_ends_with_one_line_and_no_traceback(error_runs, case_id, args, fragment):
    if case_id == "cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    result = error_runs[case_id]
    _assert_one_error_line(result.returncode, result.stdout, result.stderr, fragment)


@pytest.mark.parametrize(
    "case_id, args, fragment", IN_PROCESS_ERROR_CASES, ids=[c[0] for c in IN_PROCESS_ERROR_CASES]
)
def test_more_bad_input_in_process(files, capsys, case_id, args, fragment):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch may warn about an unusual pickle before refusing it
        code, out, err = main_in_process(_fill(args, files), capsys)
    _assert_one_error_line(code, out, err, fragment)


def test_failed_runs_leave_nothing_behind(error_runs, files, capsys):
    if not torch.cuda.is_available():
        assert error_runs["cuda_without_gpu"].returncode != 0
        assert not (files["dir"] / "cuda_run").exists(), "--device cuda made a results folder, then failed"
    main_in_process(["--checkpoint", str(files["evil"]), "--source", "hi"], capsys)
    assert not (files["dir"] / "PWNED").exists(), "the malicious checkpoint's code ran"


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_run")
    result = run_cli(*TINY_RUN, "--output_dir", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "pytorch_version done" in result.stdout
    return out / "results_pytorch" / "checkpoints" / "best_model.pt"


def test_train_via_cli_writes_the_results_folder(trained_checkpoint):
    results = trained_checkpoint.parents[1]
    for name in ("config.json", "summary.json", "training_curves.png", "logs/metrics.jsonl", "logs/train.log",
                 "checkpoints/best_model.pt", "checkpoints/checkpoint_epoch_1.pt"):  # fmt: skip
        assert (results / name).is_file(), name
    assert "epoch 1:" in (results / "logs" / "train.log").read_text()


def test_decode_with_the_trained_checkpoint(trained_checkpoint):
    result = run_cli("--checkpoint", str(trained_checkpoint), "--source", "abc")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert "source: abc" in lines
    assert len([line for line in lines if line.startswith("output: ")]) == 1


def test_beam_decoding_in_process(trained_checkpoint, capsys):
    argv = [
        "--checkpoint",
        str(trained_checkpoint),
        "--source",
        "abc",
        "--beam_size",
        "3",
        "--max_length",
        "5",
    ]
    code, out, err = main_in_process(argv, capsys)
    assert code == 0, err
    output = [line for line in out.splitlines() if line.startswith("output: ")]
    assert len(output) == 1 and len(output[0].removeprefix("output: ")) <= 5


def test_interactive_decoding_reads_stdin(trained_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("abc\n\nxy\n"))
    code, out, err = main_in_process(["--checkpoint", str(trained_checkpoint), "--interactive"], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 3  # the prompt, then one output per non-empty line


def test_help_lists_the_documented_flags(capsys):
    code, out, _ = main_in_process(["--help"], capsys)
    assert code == 0
    for flag in ("--version", "--epochs", "--batch_size", "--hidden_size", "--num_layers", "--num_heads",
                 "--train_size", "--eval_size", "--debug", "--track_internals", "--visualize", "--wandb",
                 "--wandb_project", "--gradient_accumulation_steps", "--dataloader_num_workers", "--device",
                 "--task", "--seed", "--output_dir", "--checkpoint", "--source", "--interactive",
                 "--beam_size", "--max_length", "--config"):  # fmt: skip
        assert flag in out, flag


def test_version_test_self_check_passes():
    result = run_cli("--version", "test", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert " 0 failed" in result.stdout
