"""torchrun on this CPU: 2 processes, gloo, loopback only (pytorch_version/distributed.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import torch

from tests.robust_helpers import ENV, ROOT, TINY, flags, run_main

# 8 global batches of 32 per epoch; dropout 0, so one process and two must agree
SETTINGS = TINY | dict(train_size=256, eval_size=16, dropout=0.0, epochs=2)
# Softmax ignores a bias added to every key (it shifts a query's scores by a constant), so the
# gradient of k_proj.bias is zero up to rounding, and Adam divides that noise by its own size:
# these biases take full-size random steps in any two runs that round differently.
NOISE_ONLY = "self_attn.k_proj.bias", "cross_attn.k_proj.bias"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(ROOT / "main.py"), *args]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def assert_same_weights(a: dict, b: dict) -> None:
    for name in a:
        if not name.endswith(NOISE_ONLY):
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    two = torchrun("--version", "pytorch", *flags(**SETTINGS | dict(batch_size=16)), "--output_dir",
                   str(tmp_path / "two"), "--dist_timeout", "30")  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("pytorch_version done") == 1, two.stdout  # rank 0 reports, once
    one = run_main("--version", "pytorch", *flags(**SETTINGS | dict(batch_size=32)), "--output_dir",
                   str(tmp_path / "one"))  # fmt: skip
    assert one.returncode == 0, one.stderr
    results = tmp_path / "two" / "results_pytorch"
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == [
        "best_model.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt"]  # fmt: skip
    assert len((results / "logs" / "metrics.jsonl").read_text().splitlines()) == 2  # one writer
    for name in ("checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt"):
        assert_same_weights(weights(results / "checkpoints" / name),
                            weights(tmp_path / "one" / "results_pytorch" / "checkpoints" / name))  # fmt: skip

    # the 2-process checkpoint of epoch 1 goes on in one process with the same global batch,
    # and ends where the uninterrupted 2-process run ended
    epoch_1 = str(results / "checkpoints" / "checkpoint_epoch_1.pt")
    resumed = run_main("--version", "pytorch", *flags(**SETTINGS | dict(batch_size=32)), "--output_dir",
                       str(tmp_path / "resumed"), "--resume", epoch_1)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    end = "checkpoints/checkpoint_epoch_2.pt"
    assert_same_weights(weights(tmp_path / "resumed" / "results_pytorch" / end), weights(results / end))
    # another global batch is refused, by name
    refused = run_main("--version", "pytorch", *flags(**SETTINGS | dict(batch_size=16)), "--output_dir",
                       str(tmp_path / "refused"), "--resume", epoch_1)  # fmt: skip
    assert refused.returncode == 2 and "16 x 2 processes" in refused.stderr, refused.stderr


def test_huggingface_under_torchrun_finishes(tmp_path):
    run = torchrun("--version", "huggingface", *flags(**SETTINGS | dict(batch_size=16, epochs=1)),
                   "--output_dir", str(tmp_path), "--dist_timeout", "30")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("huggingface_version done") == 1, run.stdout
    out = tmp_path / "results_huggingface"
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()
    assert len((out / "logs" / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_failing_rank_ends_the_whole_job(tmp_path):
    start = time.monotonic()
    settings = flags(**SETTINGS | dict(batch_size=16))
    run = torchrun("--version", "pytorch", *settings, "--output_dir", str(tmp_path), "--dist_timeout", "10",
                   env={"TRANSFORMER_TUTORIAL_FAIL_RANK": "1"})  # fmt: skip
    assert run.returncode != 0
    assert "fails on purpose" in run.stderr
    assert time.monotonic() - start < 60


def test_version_both_is_refused_under_torchrun(tmp_path):
    run = torchrun("--version", "both", *flags(**SETTINGS), "--output_dir", str(tmp_path))
    assert run.returncode != 0
    assert run.stderr.count("main.py: error: under torchrun only --version pytorch or huggingface") == 1
