"""The encoder-only tasks under torchrun and across a resume: two processes train what one does with
the global batch (the masked LM's masks included), and a resumed run ends where a whole one ends."""

from __future__ import annotations

import pytest
import torch

from tests.robust_helpers import flags, run_main
from tests.runs.test_distributed import assert_same_weights, torchrun

pytestmark = pytest.mark.slow  # several processes each

TINY = dict(hidden_size=32, num_layers=1, num_heads=4, ffn_size=64, dropout=0.0, device="cpu", quiet=True,
            checkpoint_average=0, warmup_steps=5)  # fmt: skip


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(
        "".join(f"the {w} of the {v}.\n" for w in ("king", "queen", "fool") for v in ("land", "sea") * 300)
    )
    return path


def _weights(folder, name):
    return torch.load(folder / "results_pytorch" / "checkpoints" / name, weights_only=True)["model_state"]


@pytest.mark.parametrize("task", ["majority", "mlm"])
def test_two_processes_train_what_one_does_with_the_global_batch(tmp_path, text, task):
    if task == "mlm":
        settings = dict(
            arch="bert", task="mlm", data_file=str(text), context_length=18, max_steps=12, eval_every=6
        )
    else:
        settings = dict(arch="bert", task="majority", train_size=256, eval_size=32, epochs=2)
    two = torchrun("--version", "pytorch", *flags(**TINY, **settings, batch_size=8), "--output_dir",
                   str(tmp_path / "two"), "--dist_timeout", "30")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_main("--version", "pytorch", *flags(**TINY, **settings, batch_size=16), "--output_dir",
                   str(tmp_path / "one"))  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert_same_weights(_weights(tmp_path / "two", "checkpoint_epoch_2.pt"),
                        _weights(tmp_path / "one", "checkpoint_epoch_2.pt"))  # fmt: skip


def test_a_resumed_masked_lm_ends_where_the_whole_run_ends(tmp_path, text):
    settings = flags(**TINY, arch="bert", task="mlm", data_file=str(text), context_length=18, eval_every=6,
                     max_steps=12, batch_size=8)  # fmt: skip
    whole = run_main("--version", "pytorch", *settings, "--output_dir", str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    round_1 = tmp_path / "a" / "results_pytorch" / "checkpoints" / "checkpoint_epoch_1.pt"
    resumed = run_main("--version", "pytorch", *settings, "--output_dir", str(tmp_path / "b"), "--resume",
                       str(round_1))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(_weights(tmp_path / "b", "checkpoint_epoch_2.pt"),
                        _weights(tmp_path / "a", "checkpoint_epoch_2.pt"))  # fmt: skip
