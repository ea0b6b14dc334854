"""The HF encoder-only models trained by the Trainer (huggingface_version/train.py, encoder_trainer.py,
encoder_run_data.py) on pytorch_version's own data, and --version both.

    pieces     the dict layout of a batch; a masked LM's rounds are pytorch_version's masked batches
    runs       a short classification (CLI), digits and masked-LM run each learn on held-out data and
               write results_huggingface/ with pytorch_version's metric keys
    both       same initial weights, same batches: the two versions' metrics.jsonl agree
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.robust_helpers import main_in_process, metrics_without_time
from utils.runtime.config import RunConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(seed=0, device="cpu", hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, dropout=0.0,
            batch_size=32, warmup_steps=10, lr_schedule="cosine", learning_rate=1e-2, quiet=True,
            checkpoint_average=0)  # fmt: skip
# held-out accuracy for seeds 0-3 (chance in brackets), a few seconds each on one core:
# the majority letter of up to 10 (mean pooling), 32 steps: 0.86-1.0 (about 0.3)
MAJORITY = dict(TINY, arch="bert", task="majority", train_size=500, eval_size=100, max_len=10, epochs=2,
                pooling="mean")  # fmt: skip
# the digits in 4 patches of 4 x 4, 135 steps: 0.39-0.60 (0.1)
DIGITS = dict(TINY, arch="vit", task="digits", patch_size=4, epochs=3, learning_rate=3e-3)
# runs of one letter: a masked letter is its neighbours', 40 steps: 0.61-0.82 of the masked tokens (0.1)
MLM = dict(TINY, arch="bert", task="mlm", context_length=16, max_steps=40, eval_every=20)


@pytest.fixture(scope="module")
def letter_runs(tmp_path_factory) -> Path:
    """Ten letters, each 40 times in a row, ten times over."""
    path = tmp_path_factory.mktemp("text") / "runs.txt"
    path.write_text("".join(letter * 40 for letter in "abcdefghij" * 10), encoding="utf-8")
    return path


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_a_batch_becomes_the_models_inputs_with_minus_100_where_no_token_was_chosen():
    from huggingface_version.encoder_run_data import hf_inputs

    masked = {"src": torch.tensor([[4, 6, 8, 5, 0]]), "tgt_out": torch.tensor([[0, 7, 0, 0, 0]])}
    inputs = hf_inputs(masked)
    assert inputs["labels"].tolist() == [[-100, 7, -100, -100, -100]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 0]]
    images = hf_inputs({"src": torch.rand(2, 1, 8, 8), "tgt_out": torch.tensor([3, 4])})
    assert sorted(images) == ["labels", "pixel_values"] and images["labels"].tolist() == [3, 4]


def test_the_mlm_rounds_are_pytorch_versions_masked_batches(letter_runs):
    from huggingface_version.encoder_run_data import encoder_data
    from pytorch_version.encoder_data import mlm_data
    from utils.runtime.distributed import World

    cfg = RunConfig.from_dict({**MLM, "data_file": str(letter_runs)})
    hf = encoder_data(cfg)
    theirs = mlm_data(cfg, World(), torch.device("cpu")).train_loader
    theirs.set_epoch(1)
    ours = next(iter(hf.train_dataset))  # round 1's first batch
    first = next(iter(theirs))
    assert torch.equal(ours["input_ids"], first["src"])
    assert torch.equal(ours["labels"] != -100, first["tgt_out"] != 0)
    assert hf.model_fields["mask_id"] == hf.tokenizer.mask_token_id  # the fast tokenizer: the same ids


def test_a_classification_run_from_the_cli_learns_and_writes_pytorch_versions_keys(tmp_path, capsys):
    argv = ["--version", "huggingface", "--output_dir", str(tmp_path)]
    for key, value in MAJORITY.items():
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else []
        else:
            argv += [f"--{key}", str(value)]
    code, printed, err = main_in_process(argv, capsys)
    assert code == 0, err
    out = tmp_path / "results_huggingface"
    assert "huggingface_version done: accuracy" in printed.splitlines()[-1]
    summary = _summary(out)
    assert set(summary["final"]) == {"eval_loss", "eval_accuracy"}
    assert summary["final"]["eval_accuracy"] >= 0.6, summary["final"]  # 0.89 here; chance about 0.3
    assert summary["confusion_matrix"]["labels"] == list("abcde")
    assert set(_records(out)[0]) == {"epoch", "step", "train_loss", "eval_loss", "eval_accuracy", "lr",
                                     "elapsed_s"}  # fmt: skip
    for name in ("model.safetensors", "modeling_encoder.py", "tokenizer.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name


def test_a_digits_run_learns_and_saves_a_folder_the_image_pipeline_reads(tmp_path):
    from transformers import pipeline

    from huggingface_version.train import train_huggingface

    cfg = RunConfig.from_dict({**DIGITS, "version": "huggingface", "output_dir": str(tmp_path)})
    summary = train_huggingface(cfg)
    assert summary["final"]["eval_accuracy"] >= 0.3, summary["final"]  # 0.60 here; chance 0.1
    out = tmp_path / "results_huggingface"
    assert (out / "preprocessor_config.json").is_file() and (out / "image_processing_encoder.py").is_file()
    from PIL import Image

    classify = pipeline("image-classification", model=str(out), trust_remote_code=True)
    assert classify(Image.new("RGB", (8, 8)))[0]["label"] in "0123456789"


def test_a_masked_lm_run_learns_to_fill_in_the_letters(tmp_path, letter_runs):
    from transformers import pipeline

    from huggingface_version.train import train_huggingface

    cfg = RunConfig.from_dict({**MLM, "version": "huggingface", "data_file": str(letter_runs),
                               "output_dir": str(tmp_path)})  # fmt: skip
    summary = train_huggingface(cfg)
    final = summary["final"]
    assert set(final) == {"eval_loss", "eval_masked_accuracy", "eval_perplexity"}
    assert final["eval_masked_accuracy"] >= 0.4, final  # 0.80 here; chance 0.1
    assert summary["masking"]["shares"]["chosen"] == pytest.approx(0.15, abs=0.05)  # utils/data/masking.py
    assert [r["step"] for r in _records(tmp_path / "results_huggingface")] == [20, 40]
    fill = pipeline("fill-mask", model=str(tmp_path / "results_huggingface"))
    assert len(fill("abc[MASK]efg")) == 5  # the five likeliest tokens


@pytest.mark.parametrize("kind", ["classification", "mlm"])
def test_both_starts_the_two_from_the_same_weights_and_they_agree(kind, tmp_path, letter_runs):
    from commands.train import both_done_line
    from huggingface_version.compare import run_comparison

    if kind == "mlm":
        settings = {**MLM, "data_file": str(letter_runs), "max_steps": 10, "eval_every": 5}
    else:
        settings = {**MAJORITY, "train_size": 200, "eval_size": 50}
    cfg = RunConfig.from_dict({**settings, "version": "both", "parallel_halves": False,
                               "output_dir": str(tmp_path)})  # fmt: skip
    result = run_comparison(cfg)
    assert result["max_abs_logit_diff_converted"] < 1e-5 and result["arch"] == "bert"
    hf, pt = (metrics_without_time(tmp_path / f"results_{v}") for v in ("huggingface", "pytorch"))
    assert [set(r) for r in hf] == [set(r) for r in pt]
    for a, b in zip(hf, pt, strict=True):  # same start, same batches, same recipe, dropout 0
        assert a == pytest.approx(b, rel=1e-4)
    line = both_done_line(result, cfg)
    assert line.startswith("both done: masked-token loss" if kind == "mlm" else "both done: accuracy pytorch")
    md = (tmp_path / "results_comparison" / "comparison.md").read_text()
    assert "(BERT)" in md and "fill-mask" in md


@pytest.mark.parametrize("version", ["huggingface", "both"])
def test_init_from_is_one_line_for_the_hf_version_and_writes_nothing(version, tmp_path, capsys):
    argv = ["--version", version, "--arch", "bert", "--task", "majority",
            "--init_from", str(tmp_path / "m.pt"), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    code, _, err = main_in_process(argv, capsys)
    assert code == 2 and "is for --version pytorch" in err and err.count("\n") <= 1, err
    assert not (tmp_path / "out").exists()
