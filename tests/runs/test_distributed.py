"""torchrun on this CPU: 2 processes, gloo, loopback only (utils/runtime/distributed.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.faults import FAIL_RANK_ENV
from tests.robust_helpers import ENV, ROOT, TINY, flags, main_script, run_main

pytestmark = pytest.mark.slow  # torchrun jobs of several processes

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


def torchrun_command(*args: str, script: str = "main.py") -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", str(ROOT / script), *args]  # fmt: skip


def torchrun(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """torchrun main.py ARGS; with FAULT_* variables in `env`, through tests/fault_main.py."""
    command = torchrun_command(*args, script=main_script(env))
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
        "averaged_model.pt", "best_model.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt"]  # fmt: skip
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


@pytest.mark.parametrize("batching", [dict(batch_size=16), dict(max_tokens=96)], ids=["batch", "tokens"])
def test_huggingface_under_torchrun_finishes(tmp_path, batching):
    run = torchrun("--version", "huggingface", *flags(**SETTINGS | batching | dict(epochs=1)),
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
                   env={FAIL_RANK_ENV: "1"})  # fmt: skip
    assert run.returncode != 0
    assert "fails on purpose" in run.stderr
    assert time.monotonic() - start < 60


def test_version_both_is_refused_under_torchrun(tmp_path):
    run = torchrun("--version", "both", *flags(**SETTINGS), "--output_dir", str(tmp_path))
    assert run.returncode != 0
    assert run.stderr.count("main.py: error: under torchrun only --version pytorch or huggingface") == 1


def test_max_tokens_batches_are_shared_out_by_rank():
    """Every process gets as many batches; together they cover the epoch's batches (padded by
    wrapping around), the same on every process for an epoch and new for the next one."""
    from utils.runtime.distributed import World, token_batches

    lengths = [3 + i % 17 for i in range(500)]

    def share(rank: int, size: int, epoch: int) -> list:
        order = token_batches(lengths, lengths, 64, World(rank, size), seed=5)
        order.set_epoch(epoch)
        assert len(list(order)) == len(order)
        return list(order)

    shares = {epoch: [share(r, 5, epoch) for r in range(5)] for epoch in (1, 2)}  # 96 batches: 4 reused
    for epoch, ranks in shares.items():
        assert len({len(r) for r in ranks}) == 1
        together = [b for i in range(len(ranks[0])) for b in (r[i] for r in ranks)]
        epoch_batches = share(0, 1, epoch)
        assert len(together) == 100 and together[: len(epoch_batches)] == epoch_batches
        assert together[len(epoch_batches) :] == epoch_batches[: len(together) - len(epoch_batches)]
    assert shares[1] != shares[2]


def test_max_tokens_under_torchrun(tmp_path):
    """Two processes share each epoch's --max_tokens batches: half the optimizer steps of one process."""
    settings = flags(**SETTINGS | dict(max_tokens=96, epochs=2))
    two = torchrun("--version", "pytorch", *settings, "--output_dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_main("--version", "pytorch", *settings, "--output_dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    steps_one, steps_two = (
        [json.loads(line)["step"] for line in (tmp_path / run / "results_pytorch/logs/metrics.jsonl").open()]
        for run in ("one", "two")
    )
    assert steps_two == [-(-s // 2) for s in steps_one], (steps_one, steps_two)
    # its checkpoint goes on only with as many processes: which batch is whose depends on it
    epoch_1 = str(tmp_path / "two" / "results_pytorch" / "checkpoints" / "checkpoint_epoch_1.pt")
    refused = run_main("--version", "pytorch", *settings, "--output_dir", str(tmp_path), "--resume", epoch_1)
    assert refused.returncode == 2 and "--nproc_per_node=2" in refused.stderr, refused.stderr


def test_sigterm_to_one_rank_stops_every_rank_and_resumes(tmp_path):
    """A signal reaches one process only (a scheduler, a user's kill): all stop after the same step,
    rank 0 saves interrupted.pt, and the run goes on from it under torchrun."""
    import signal

    settings = SETTINGS | dict(batch_size=16)
    command = torchrun_command("--version", "pytorch", *flags(**settings | dict(epochs=400)),
                               "--output_dir", str(tmp_path), "--dist_timeout", "30")  # fmt: skip
    job = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    deadline = time.monotonic() + 60
    while not (checkpoints / "checkpoint_epoch_1.pt").exists():  # training is under way
        assert job.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    os.kill(_worker_pid(job.pid, rank=1), signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode != 0
    assert (checkpoints / "interrupted.pt").is_file(), stderr[-3000:]
    state = torch.load(checkpoints / "interrupted.pt", weights_only=True)["training_state"]["progress"]
    assert state["world_size"] == 2 and state["epoch"] < 400

    resumed = torchrun("--version", "pytorch", *flags(**settings | dict(epochs=state["epoch"] + 1)),
                       "--output_dir", str(tmp_path), "--dist_timeout", "30", "--resume", "auto")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoints / 'interrupted.pt'}" in resumed.stderr + resumed.stdout


def _worker_pid(agent_pid: int, rank: int) -> int:
    """The pid of the torchrun worker with this RANK (read from /proc/<pid>/environ)."""
    for child in Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker with RANK={rank} under pid {agent_pid}")
