"""--checkpoint_average N (default 3): the final model of a toy run is the mean of the last N epochs' weights
(paper, section 6.1), in both versions; summary.json says so and keeps the last epoch's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import COPY_RUN
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.config import RunConfig, UserError

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: several epochs of both versions


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]


def _mean(states: list[dict]) -> dict:
    return {name: torch.stack([s[name].float() for s in states]).mean(0) for name in states[-1]}


def test_pytorch_final_model_is_the_mean_of_the_last_three_epochs(copy_run):
    cfg, summary, out = copy_run
    assert cfg.checkpoint_average == 3 and summary["averaged_epochs"] == [6, 7, 8]
    folder = out / "checkpoints"
    states = [load_checkpoint(folder / f"checkpoint_epoch_{e}.pt")["model_state"] for e in (6, 7, 8)]
    averaged = load_checkpoint(folder / "averaged_model.pt")["model_state"]
    for name, value in _mean(states).items():
        torch.testing.assert_close(averaged[name], value)
    records = _records(out)
    assert len(records) == cfg.epochs  # one record per epoch; the average is not an epoch
    assert summary["last_epoch"]["eval_exact_match"] == records[-1]["eval_exact_match"]
    assert summary["averaged_is_final"] == (
        summary["averaged"]["eval_exact_match"] >= records[-1]["eval_exact_match"]
    )
    assert summary["final"] == (
        summary["averaged"] if summary["averaged_is_final"] else summary["last_epoch"]
    )
    assert summary["averaged"]["eval_exact_match"] >= 0.95  # the copy task is learned; the mean keeps it


def test_an_average_below_the_last_epoch_is_not_the_final_model(copy_run, tmp_path):
    import shutil

    from pytorch_version.evaluate import evaluate_average

    cfg, _, out = copy_run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    history = _records(out)
    worse = evaluate_average(cfg, tmp_path, history, lambda model: {"eval_exact_match": 0.0}, "cpu")
    assert worse["averaged_is_final"] is False and worse["averaged_epochs"] == [6, 7, 8]
    better = evaluate_average(cfg, tmp_path, history, lambda model: {"eval_exact_match": 1.0}, "cpu")
    assert better["averaged_is_final"] is True


def test_hf_saved_model_is_the_mean_of_the_last_epoch_checkpoints(tmp_path):
    from safetensors.torch import load_file

    from huggingface_version.averaging import epoch_checkpoints
    from huggingface_version.train import train_huggingface

    out = tmp_path / "results_huggingface"
    settings = {**COPY_RUN, "version": "huggingface", "checkpoint_average": 2}
    summary = train_huggingface(RunConfig(output_dir=str(tmp_path), **settings))
    records = _records(out)
    ends = epoch_checkpoints(out, records)
    assert sorted(ends) == list(range(1, 9)) and summary["averaged_epochs"] == [7, 8]
    states = [load_file(ends[e] / "model.safetensors") for e in (7, 8)]
    saved = load_file(out / "model.safetensors")
    expected = _mean(states) if summary["averaged_is_final"] else states[-1]
    for name, value in expected.items():
        torch.testing.assert_close(saved[name].float(), value.float())
    assert len(records) == 8 and summary["last_epoch"]["eval_exact_match"] == records[-1]["eval_exact_match"]
    assert summary["averaged"]["eval_exact_match"] >= 0.9  # the copy task is learned; the mean keeps it
    assert summary["final"] == (
        summary["averaged"] if summary["averaged_is_final"] else summary["last_epoch"]
    )
    assert set(summary["averaged"]) >= {"eval_loss", "eval_token_accuracy", "eval_exact_match"}


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_no_average_when_off_or_with_a_single_epoch(tmp_path, version):
    from huggingface_version.train import train_huggingface
    from pytorch_version.train import train

    run = train if version == "pytorch" else train_huggingface
    for average, epochs in ((0, 2), (3, 1)):
        settings = {**COPY_RUN, "version": version, "train_size": 256, "eval_size": 32, "epochs": epochs}
        summary = run(
            RunConfig(output_dir=str(tmp_path / f"{average}"), checkpoint_average=average, **settings)
        )
        assert "averaged" not in summary and summary["final"] == summary["last_epoch"]
    assert not list(tmp_path.rglob("averaged_model.pt"))


def test_a_negative_average_is_a_clear_error():
    with pytest.raises(UserError, match="checkpoint_average must be >= 0"):
        RunConfig(checkpoint_average=-1)
