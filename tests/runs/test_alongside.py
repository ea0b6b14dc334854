"""`--version both` on a CPU with 2+ threads: the Hugging Face half trains in a child process alongside the
pytorch half (huggingface_version/alongside.py). Same results as one after the other; the child's console
is shown after the pytorch half's; a SIGTERM stops both with their checkpoints saved."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.robust_helpers import ENV, ROOT, flags
from utils.runtime.config import RunConfig

pytestmark = pytest.mark.slow  # two training processes side by side

SMALL = dict(task="copy", seed=0, device="cpu", train_size=256, eval_size=32, min_len=2, max_len=4,
             hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, dropout=0.0, epochs=2,
             batch_size=32, warmup_steps=20, lr_factor=1.0, quiet=True)  # fmt: skip


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_split_only_on_a_cpu_with_two_or_more(two_threads):
    from huggingface_version.alongside import threads_for_halves

    cpu = torch.device("cpu")
    assert threads_for_halves(RunConfig(version="both"), cpu) == (1, 1)
    assert threads_for_halves(RunConfig(version="both", parallel_halves=False), cpu) is None
    assert threads_for_halves(RunConfig(version="both"), torch.device("cuda")) is None
    torch.set_num_threads(5)
    assert threads_for_halves(RunConfig(version="both"), cpu) == (2, 3)
    torch.set_num_threads(1)
    assert threads_for_halves(RunConfig(version="both"), cpu) is None


def test_halves_alongside_give_the_results_of_one_after_the_other(tmp_path, two_threads, capsys):
    from huggingface_version.compare import run_comparison

    runs = {}
    for parallel in (True, False):
        cfg = RunConfig(
            version="both", output_dir=str(tmp_path / str(parallel)), parallel_halves=parallel, **SMALL
        )
        runs[parallel] = run_comparison(cfg)
        if parallel:
            printed = capsys.readouterr().out
    log = (tmp_path / "True/results_huggingface/logs/console.log").read_text()
    assert "huggingface_version: task=copy" in log  # the child's own log lines went to its console file
    assert "--- huggingface half" in printed and "huggingface_version: task=copy" in printed
    assert not (tmp_path / "False/results_huggingface/logs/console.log").exists()
    for version in ("pytorch", "huggingface"):  # the same start, data and order, dropout 0
        alongside, sequential = runs[True][version], runs[False][version]
        assert alongside["train_loss_per_epoch"] == pytest.approx(
            sequential["train_loss_per_epoch"], rel=1e-4
        )
        assert alongside["final_eval_exact_match"] == pytest.approx(
            sequential["final_eval_exact_match"], abs=0.07
        )
    assert runs[True]["max_abs_logit_diff_converted"] < 1e-5


def test_sigterm_stops_both_halves_and_each_saves_its_checkpoint(tmp_path):
    """SIGTERM to main.py (not to the child) once the child has trained an epoch: both save and stop."""
    settings = {**SMALL, "epochs": 400, "train_size": 640, "output_dir": str(tmp_path)}
    env = {**ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "main.py"), "--version", "both", *flags(**settings)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    hf = tmp_path / "results_huggingface"
    try:
        deadline = time.monotonic() + 240
        while not (hf / "logs/metrics.jsonl").is_file() or not (hf / "logs/metrics.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the child never finished an epoch"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    pt = tmp_path / "results_pytorch"  # stopped mid-epoch (interrupted.pt) or at an epoch's end
    assert list((pt / "checkpoints").glob("interrupted.pt")) or list(
        (pt / "checkpoints").glob("checkpoint_epoch_*")
    )
    assert not (pt / "summary.json").exists(), "the pytorch half ran to the end"
    assert list(hf.glob("checkpoint-*")), "the child saved nothing"
    assert not (hf / "model.safetensors").exists(), "the stopped child wrote a final model"
    assert "--- huggingface half" in stdout and "SIGTERM received" in stdout
    assert not (tmp_path / "results_comparison/comparison.json").exists()
    metrics = (hf / "logs/metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["epoch"] < 400 for line in metrics)
