"""The bad input table: each row ends with one `main.py: error:` line naming the problem, a non-zero
exit and no traceback, and leaves every file already saved as it was.

Rows already covered by tests/cli/test_core_cli.py (heads not dividing, zero/negative epochs, --beam_size 0,
--device cuda without CUDA, missing/garbage/mismatched/malicious checkpoint, unknown YAML keys, wrong
YAML types, empty --source, ...) and tests/robust/test_robust_io.py (results folder not writable, disk full)
are not repeated here. Run in this process through main.main(), so each row costs no torch import.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from huggingface_version.convert import hf_config_of
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from huggingface_version.tokenization import from_char_tokenizer
from pytorch_version.model import Transformer
from pytorch_version.train import train
from tests.conftest import tiny_config
from tests.robust_helpers import TINY, assert_one_error_line, flags, main_in_process
from utils.data.tasks import tokenizer_for_task
from utils.runtime.checkpoint import save_checkpoint
from utils.runtime.config import RunConfig

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: one CLI process per bad input


@pytest.fixture(scope="module")
def files(tmp_path_factory, single_thread) -> dict[str, Path]:
    """A trained run (resumable checkpoints), small checkpoints of both versions, broken files, data."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    train(RunConfig(version="pytorch", output_dir=str(tmp / "run"), **{**TINY, "epochs": 1}))
    run = tmp / "run" / "results_pytorch"
    tokenizer = tokenizer_for_task("copy")
    vocab = {"src_vocab_size": tokenizer.vocab_size, "tgt_vocab_size": tokenizer.vocab_size}
    torch.manual_seed(0)
    save_checkpoint(tmp / "valid.pt", Transformer(tiny_config(**vocab)), tokenizer)
    save_checkpoint(tmp / "short.pt", Transformer(tiny_config(**vocab, max_position=16)), tokenizer)
    hf = TutorialTransformerForConditionalGeneration(hf_config_of(tiny_config(**vocab, max_position=16)))
    hf.save_pretrained(tmp / "hf")
    from_char_tokenizer(tokenizer).save_pretrained(tmp / "hf")
    (tmp / "hf_trainer").mkdir()
    (tmp / "hf_trainer" / "trainer_state.json").write_text("{}")
    (tmp / "empty.pt").touch()
    data = (run / "checkpoints" / "checkpoint_epoch_1.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "latin1.yaml").write_bytes("epochs: 2  # 'é' in Latin-1\n".encode("latin-1"))
    for name, train_de, val_de in [("data_empty", "a\nb\n", ""), ("data_mismatch", "a\nb\nc\n", "x\n")]:
        folder = tmp / name
        folder.mkdir()
        for file, text in {
            "train.de": train_de,
            "train.en": "a\nb\n",
            "val.de": val_de,
            "val.en": "x\n",
        }.items():
            (folder / file).write_text(text)
    return {"dir": tmp, "run": run, "ckpt": run / "checkpoints"} | {
        p.stem: p for p in tmp.iterdir() if p.is_file() or p.name.startswith("hf")
    }


TRAIN = ["--version", "pytorch", *flags(**TINY)]
HF_TRAIN = ["--version", "huggingface", *flags(**TINY)]
RESUME = [*TRAIN, "--output_dir", "{dir}/run"]  # the trained run's folder: must stay as it is
# (id, arguments with {placeholders}, a fragment the error line must hold)
ROWS = [
    # flag values and combinations
    ("zero_hidden_size", ["--hidden_size", "0"], "hidden_size must be a positive integer, got 0"),
    ("negative_batch_size", ["--batch_size", "-4"], "batch_size must be a positive integer, got -4"),
    ("zero_train_size", ["--train_size", "0"], "train_size must be a positive integer"),
    ("dropout_out_of_range", [*TRAIN, "--dropout", "1.5"], "dropout must be in [0, 1)"),
    ("label_smoothing_one", ["--label_smoothing", "1"], "label_smoothing must be in [0, 1)"),
    ("negative_nonfinite_limit", ["--max_nonfinite_steps", "-1"], "max_nonfinite_steps must be >= 0"),
    ("fp16_and_bf16", ["--fp16", "--bf16"], "exclude each other"),
    ("precision_and_bf16", ["--precision", "fp32", "--bf16"], "exclude each other"),
    ("precision_unknown", ["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    ("fp16_on_cpu_pytorch", [*TRAIN, "--fp16", "--output_dir", "{dir}/x"], "fp16 needs a CUDA GPU"),
    ("fp16_on_cpu_hf", [*HF_TRAIN, "--precision", "fp16", "--output_dir", "{dir}/x"], "fp16 needs a CUDA"),
    ("mps_without_mps", [*TRAIN, "--device", "mps", "--output_dir", "{dir}/x"], "--device mps"),
    ("resume_with_version_both", ["--version", "both", "--resume", "x.pt"], "resumes its two halves with"),
    ("resume_with_version_analysis", ["--version", "analysis", "--resume", "auto"], "--resume continues"),
    ("negative_save_every_steps", ["--save_every_steps", "-1"], "save_every_steps must be >= 0"),
    ("resume_with_checkpoint", ["--resume", "auto", "--checkpoint", "{valid}", "--source", "a"], "--resume"),
    # toy data that cannot be generated, data files that are empty or do not match
    ("min_len_above_max_len", ["--min_len", "5", "--max_len", "3"], "need 1 <= min_len <= max_len"),
    ("impossible_toy_data", [*TRAIN, "--min_len", "1", "--max_len", "1"], "too many"),
    ("empty_data_file", ["--task", "translation", "--data_dir", "{dir}/data_empty"], "val.de is empty"),
    ("mismatched_data_files", ["--task", "translation", "--data_dir", "{dir}/data_mismatch"], "has 3 lines"),
    # --resume: missing, empty, truncated, weights only, other settings, the other version's
    ("resume_missing", [*RESUME, "--resume", "{dir}/nope.pt"], "checkpoint not found"),
    ("resume_empty", [*RESUME, "--resume", "{empty}"], "checkpoint is empty"),
    ("resume_truncated", [*RESUME, "--resume", "{truncated}"], "corrupt or truncated"),
    ("resume_weights_only", [*RESUME, "--resume", "{ckpt}/best_model.pt"], "holds weights only"),
    ("resume_other_settings", [*RESUME, "--hidden_size", "64", "--resume", "auto"],
     "other settings (hidden_size: checkpoint 32, flags 64)"),
    ("resume_other_seed", [*RESUME, "--seed", "5", "--resume", "{ckpt}/checkpoint_epoch_1.pt"],
     "seed: checkpoint 3, flags 5"),
    ("resume_hf_folder_as_pytorch", [*RESUME, "--resume", "{hf_trainer}"], "is a Hugging Face folder"),
    ("resume_pt_file_as_hf", [*HF_TRAIN, "--output_dir", "{dir}/x", "--resume", "{valid}"], "is a file"),
    # --checkpoint: the other version's files, flags that contradict it, broken files
    ("checkpoint_hf_weights_file", ["--checkpoint", "{hf}/model.safetensors", "--source", "ab"],
     "belongs to a Hugging Face model folder"),
    ("checkpoint_pytorch_folder", ["--checkpoint", "{ckpt}", "--source", "ab"],
     "holds pytorch_version checkpoints"),
    ("checkpoint_pytorch_results", ["--checkpoint", "{run}", "--source", "ab"], "a pytorch_version results"),
    ("checkpoint_other_dims", ["--checkpoint", "{valid}", "--source", "ab", "--hidden_size", "64"],
     "does not fit the flags: hidden_size: checkpoint 32, flags 64"),
    ("checkpoint_other_vocab", ["--checkpoint", "{valid}", "--source", "12", "--task", "addition"],
     "src_vocab_size: checkpoint 30, flags 15"),
    ("hf_checkpoint_other_dims", ["--checkpoint", "{hf}", "--source", "ab", "--num_layers", "3"],
     "num_layers: checkpoint 2, flags 3"),
    ("checkpoint_empty", ["--checkpoint", "{empty}", "--source", "ab"], "checkpoint is empty"),
    ("checkpoint_truncated", ["--checkpoint", "{truncated}", "--source", "ab"], "corrupt or truncated"),
    # text that is not UTF-8
    ("config_not_utf8", ["--config", "{latin1}"], "is not UTF-8 text: byte 0xe9"),
    ("source_not_utf8", ["--checkpoint", "{valid}", "--source", "ab\udcff"], "--source is not valid UTF-8"),
]  # fmt: skip


# before each row's own flags: a row that wrongly got through trains a few steps into {dir}/x, not the
# default job into the current folder (the test then fails on {dir}/x)
SAFETY = ["--output_dir", "{dir}/x", "--train_size", "64", "--eval_size", "8", "--epochs", "1", "--quiet"]


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in [*SAFETY, *args]]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a results folder but the log, which records the refused attempts."""
    return {
        str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.log"
    }


@pytest.mark.parametrize("case_id, args, fragment", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_changes_nothing(files, capsys, case_id, args, fragment):
    has_gpu = torch.cuda.is_available() if case_id.startswith("fp16") else False
    if has_gpu or (case_id == "mps_without_mps" and torch.backends.mps.is_available()):
        pytest.skip("this machine has the hardware")
    before = _snapshot(files["run"])
    assert_one_error_line(*main_in_process(_fill(args, files), capsys), fragment)
    assert _snapshot(files["run"]) == before, "a refused run changed a saved file"
    assert not (files["dir"] / "x").exists(), "a refused run made a results folder"


def test_interactive_input_that_is_not_utf8(files, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abc\nd\xffe\n"), encoding="utf-8"))
    code, out, err = main_in_process(["--checkpoint", str(files["valid"]), "--interactive"], capsys)
    assert_one_error_line(code, out, err, "input line 2 is not valid UTF-8 text: byte 0xff at position 1")
    assert len(out.splitlines()) == 2, "the valid first line was not decoded before the error"


@pytest.mark.parametrize("checkpoint", ["short", "hf"])
def test_input_longer_than_the_model_is_truncated_with_a_warning(files, capsys, caplog, checkpoint):
    """Documented in README (Decoding): the source is cut to max_position - 1 tokens, with a warning."""
    code, out, err = main_in_process(["--checkpoint", str(files[checkpoint]), "--source", "abc" * 20], capsys)
    assert code == 0, err
    assert "input of 61 tokens truncated to the model's maximum of 15" in caplog.text
    assert "output: " in out


@pytest.mark.parametrize("checkpoint", ["valid", "hf"])
def test_unknown_characters_become_unk_not_a_crash(files, capsys, checkpoint):
    code, out, err = main_in_process(["--checkpoint", str(files[checkpoint]), "--source", "ab€C!é"], capsys)
    assert code == 0, err
    assert "source: ab€C!é" in out and "output: " in out


def test_the_table_leaves_the_trained_run_usable(files, capsys):
    """After every refused --resume: the run still resumes (one more epoch) and its history continues."""
    argv = [*TRAIN, "--output_dir", str(files["dir"] / "run"), "--epochs", "2", "--resume", "auto"]
    code, _, err = main_in_process(argv, capsys)
    assert code == 0, err
    records = [
        json.loads(line) for line in (files["run"] / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
def test_a_truncated_safetensors_file_is_one_line(files, capsys, tmp_path, keep):
    """An HF folder whose model.safetensors was cut short (a copy interrupted, a download that stopped)."""

    folder = tmp_path / "hf_cut"
    shutil.copytree(files["hf"], folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    before = _snapshot(folder)
    result = main_in_process(["--checkpoint", str(folder), "--source", "abc"], capsys)
    assert_one_error_line(*result, "model.safetensors cannot be read (truncated, or not a safetensors file)")
    assert _snapshot(folder) == before
