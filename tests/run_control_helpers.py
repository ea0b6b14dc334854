"""Shared by tests/cli/test_run_controls.py and test_model_controls.py: tiny runs of both
versions and ways to compare what they saved."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from pytorch_version.train import train
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.config import RunConfig

# one epoch of 64 examples is 2 optimizer steps; evaluation decodes 8 examples
TINY = dict(task="copy", seed=0, device="cpu", train_size=64, eval_size=8, min_len=2, max_len=4,
            hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, dropout=0.0, epochs=1,
            batch_size=32, warmup_steps=20, quiet=True, checkpoint_average=0)  # fmt: skip


def run_pt(out: Path, **overrides) -> Path:
    train(RunConfig(output_dir=str(out), **{**TINY, **overrides}))
    return out / "results_pytorch"


def run_hf(out: Path, **overrides) -> Path:
    from huggingface_version.train import train_huggingface

    train_huggingface(RunConfig(output_dir=str(out), **{**TINY, "version": "huggingface", **overrides}))
    return out / "results_huggingface"


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "logs" / "metrics.jsonl").read_text().splitlines()]


def epochs_logged(folder: Path) -> list[int]:
    return [r["epoch"] for r in records(folder)]


def pt_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The last epoch's weights of a pytorch_version results folder."""
    last = epochs_logged(folder)[-1]
    return load_checkpoint(folder / "checkpoints" / f"checkpoint_epoch_{last}.pt")["model_state"]


def hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


RUNS = {"pytorch": (run_pt, pt_weights), "huggingface": (run_hf, hf_weights)}


def same_weights(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
