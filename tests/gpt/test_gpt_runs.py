"""A GPT language-model run under torchrun and across a resume: the same windows, the same weights."""

from __future__ import annotations

import pytest
import torch

from tests.robust_helpers import flags, run_main
from tests.runs.test_distributed import assert_same_weights, torchrun

pytestmark = pytest.mark.slow  # several processes each


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(
        "".join(f"the {w} of the {v}.\n" for w in ("king", "queen", "fool") for v in ("land", "sea") * 300)
    )
    return path


def _settings(text, **extra):
    return flags(arch="gpt", task="lm", data_file=str(text), hidden_size=32, num_layers=1, num_heads=4,
                 ffn_size=64, dropout=0.0, context_length=16, max_steps=20, eval_every=10, warmup_steps=5,
                 device="cpu", quiet=True, checkpoint_average=0, **extra)  # fmt: skip


def _weights(folder, name="checkpoint_epoch_2.pt"):
    return torch.load(folder / "results_pytorch" / "checkpoints" / name, weights_only=True)["model_state"]


def test_two_processes_see_the_windows_of_one_with_the_global_batch(tmp_path, text):
    two = torchrun("--version", "pytorch", *_settings(text, batch_size=8), "--output_dir",
                   str(tmp_path / "two"), "--dist_timeout", "30")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_main(
        "--version", "pytorch", *_settings(text, batch_size=16), "--output_dir", str(tmp_path / "one")
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert_same_weights(_weights(tmp_path / "two"), _weights(tmp_path / "one"))


def test_a_resumed_lm_run_ends_where_the_uninterrupted_one_ends(tmp_path, text):
    whole = run_main(
        "--version", "pytorch", *_settings(text, batch_size=8), "--output_dir", str(tmp_path / "a")
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    round_1 = tmp_path / "a" / "results_pytorch" / "checkpoints" / "checkpoint_epoch_1.pt"
    resumed = run_main("--version", "pytorch", *_settings(text, batch_size=8), "--output_dir",
                       str(tmp_path / "b"), "--resume", str(round_1))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(_weights(tmp_path / "b"), _weights(tmp_path / "a"))
