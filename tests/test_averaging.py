"""--checkpoint_average N (default 3): the final model of a toy run is the mean of the last N epochs' weights
(paper, section 6.1), in both versions; summary.json says so and keeps the last epoch's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytorch_version.checkpoint import load_checkpoint
from tests.conftest import COPY_RUN
from utils.config import RunConfig, UserError

pytestmark = pytest.mark.usefixtures("single_thread")


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
    assert summary["final"] == summary["averaged"]
    assert summary["final"]["eval_exact_match"] >= 0.95  # the copy task is learned; the mean keeps it


def test_hf_saved_model_is_the_mean_of_the_last_epoch_checkpoints(tmp_path):
    from safetensors.torch import load_file

    from huggingface_version.averaging import epoch_checkpoints
    from huggingface_version.train import train_huggingface

    settings = {**COPY_RUN, "version": "huggingface", "epochs": 4, "checkpoint_average": 2}
    summary = train_huggingface(RunConfig(output_dir=str(tmp_path), **settings))
    out = tmp_path / "results_huggingface"
    ends = epoch_checkpoints(out)
    assert sorted(ends) == [1, 2, 3, 4] and summary["averaged_epochs"] == [3, 4]
    expected = _mean([load_file(ends[e] / "model.safetensors") for e in (3, 4)])
    saved = load_file(out / "model.safetensors")
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value)
    records = _records(out)
    assert len(records) == 4 and summary["last_epoch"]["eval_exact_match"] == records[-1]["eval_exact_match"]
    assert summary["final"] == summary["averaged"] and 0.0 <= summary["final"]["eval_exact_match"] <= 1.0
    assert set(summary["final"]) >= {"eval_loss", "eval_token_accuracy", "eval_exact_match"}


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
