"""pytorch_version: nothing lost. An interrupted-then-resumed run ends bitwise where an uninterrupted
one does; the same seed gives the same metrics; a NaN/inf loss is skipped, and K in a row stop the run.

The interrupt is made deterministic by tests/faults.py (FAULT_SIGTERM_AFTER_STEP=N): the training
process gets SIGTERM right after optimizer step N, as from `kill` or a batch scheduler.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from pytorch_version.train import train
from tests.faults import SIGTERM_AFTER_STEP_ENV
from tests.robust_helpers import (
    TINY,
    assert_one_error_line,
    assert_same_tensors,
    flags,
    main_in_process,
    metrics_without_time,
    run_main,
)
from utils.fast import SpeedUps
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.config import RunConfig
from utils.runtime.resilience import GracefulStop

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: runs interrupted and resumed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, single_thread) -> Path:
    """results_pytorch/ of the tiny run, trained in one go (in this process, one thread)."""
    cfg = RunConfig(version="pytorch", output_dir=str(tmp_path_factory.mktemp("whole")), **TINY)
    train(cfg)
    return Path(cfg.output_dir) / "results_pytorch"


def _final_state(results: Path) -> dict:
    data = load_checkpoint(results / "checkpoints" / "checkpoint_epoch_2.pt")
    return {"model": data["model_state"], "optimizer": data["training_state"]["optimizer"]}


def test_sigterm_mid_epoch_then_resume_auto_ends_with_bitwise_equal_weights(tmp_path, uninterrupted):
    args = ["--version", "pytorch", *flags(**TINY), "--output_dir", str(tmp_path)]
    stopped = run_main(*args, env={SIGTERM_AFTER_STEP_ENV: "13"})  # epoch 2, batch 3 of 10
    assert stopped.returncode == 143, stopped.stderr
    assert "Traceback" not in stopped.stderr
    results = tmp_path / "results_pytorch"
    checkpoints = results / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {
        "checkpoint_epoch_1.pt",
        "best_model.pt",
        "interrupted.pt",
    }
    state = load_checkpoint(checkpoints / "interrupted.pt")["training_state"]["progress"]
    assert (state["epoch"], state["batches_done"], state["step"]) == (2, 3, 13)
    assert "stopped at epoch 2, batch 3/10" in (results / "logs" / "train.log").read_text()

    command = stopped.stderr.split("resume with: ")[1].splitlines()[0]
    words = shlex.split(command)
    assert words[:2] == ["python", "main.py"]
    assert words[-2:] == ["--resume", str(checkpoints / "interrupted.pt")]
    resumed = run_main(*words[2:-1], "auto")  # the logged command, with --resume auto finding the file
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "epoch 2, 3 batches of it already done" in resumed.stderr
    assert not (checkpoints / "interrupted.pt").exists(), "a superseded interrupt checkpoint was left"

    assert_same_tensors(_final_state(tmp_path / "results_pytorch"), _final_state(uninterrupted))
    assert metrics_without_time(tmp_path / "results_pytorch") == metrics_without_time(uninterrupted)


def test_resume_auto_from_an_epoch_checkpoint_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(uninterrupted / "checkpoints" / "checkpoint_epoch_1.pt", checkpoints)
    summary = train(RunConfig(version="pytorch", output_dir=str(tmp_path), resume="auto", **TINY))
    assert_same_tensors(_final_state(tmp_path / "results_pytorch"), _final_state(uninterrupted))
    assert metrics_without_time(tmp_path / "results_pytorch") == metrics_without_time(uninterrupted)
    assert summary["last_epoch"]["eval_loss"] == metrics_without_time(uninterrupted)[-1]["eval_loss"]


def test_resume_auto_with_nothing_to_resume_starts_a_new_run(tmp_path, uninterrupted):
    train(RunConfig(version="pytorch", output_dir=str(tmp_path), resume="auto", **TINY))
    assert metrics_without_time(tmp_path / "results_pytorch") == metrics_without_time(uninterrupted)


def test_same_seed_and_flags_give_identical_metrics_and_weights(tmp_path, uninterrupted):
    train(RunConfig(version="pytorch", output_dir=str(tmp_path), **TINY))
    again = metrics_without_time(tmp_path / "results_pytorch")
    assert again == metrics_without_time(uninterrupted)
    first = json.loads((uninterrupted / "logs" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first) - set(again[0]) == {"elapsed_s"}  # wall-clock fields are named *_s, easy to drop
    assert_same_tensors(_final_state(tmp_path / "results_pytorch"), _final_state(uninterrupted))
    other = metrics_without_time(uninterrupted)
    train(RunConfig(version="pytorch", output_dir=str(tmp_path / "seed4"), **{**TINY, "seed": 4}))
    assert metrics_without_time(tmp_path / "seed4" / "results_pytorch") != other


def test_a_resumable_checkpoint_is_plain_data(uninterrupted):
    path = uninterrupted / "checkpoints" / "checkpoint_epoch_1.pt"
    data = torch.load(path, map_location="cpu", weights_only=True)  # the safe unpickler takes it as it is
    assert data["toolkit_version"] and data["tokenizer"]["type"] == "char"
    assert data["run_config"]["seed"] == TINY["seed"] and data["model_config"]["hidden_size"] == 32
    state = data["training_state"]
    assert set(state) == {"optimizer", "scheduler", "rng", "progress"}
    _, internal, _ = state["rng"]["python"]  # random.getstate() as plain lists
    assert isinstance(internal, list) and len(internal) == 625
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    assert isinstance(state["progress"]["epoch_data_state"], torch.Tensor)
    assert [r["epoch"] for r in state["progress"]["history"]] == [1]


def test_graceful_stop_codes_and_a_second_ctrl_c():
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        assert stop.interrupted("here", "x.pt", "python main.py --resume x.pt").exit_code == 130
        with pytest.raises(KeyboardInterrupt):  # the user insists
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not stop._handle, "the previous handler was not put back"
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.interrupted("here", "x.pt", "cmd").exit_code == 143


def _nan_at(monkeypatch, bad_calls):
    """Make the training loop's loss (SpeedUps.loss_sum's function) NaN on the given (0-based) calls."""
    calls = {"n": 0}
    original = SpeedUps().loss_sum()

    def loss(*args, **kwargs):
        value = original(*args, **kwargs)
        calls["n"] += 1
        return value * float("nan") if bad_calls(calls["n"] - 1) else value

    monkeypatch.setattr(SpeedUps, "loss_sum", lambda self: loss)


def test_a_nan_loss_skips_its_step_and_names_the_batch(tmp_path, monkeypatch, caplog):
    _nan_at(monkeypatch, lambda call: call in (3, 4))
    cfg = RunConfig(version="pytorch", output_dir=str(tmp_path), **{**TINY, "epochs": 1})
    summary = train(cfg)
    data = load_checkpoint(tmp_path / "results_pytorch" / "checkpoints" / "checkpoint_epoch_1.pt")
    assert data["training_state"]["scheduler"]["last_epoch"] == 10 - 2, "the two NaN steps were not skipped"
    assert all(torch.isfinite(t).all() for t in data["model_state"].values())
    assert math.isfinite(summary["final"]["eval_loss"]) and math.isfinite(data["metrics"]["train_loss"])
    assert "non-finite loss (nan) at epoch 1, batch 3" in caplog.text
    assert "epoch 1, batch 4" in caplog.text


def test_k_nan_losses_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys, caplog
):
    _nan_at(monkeypatch, lambda call: call >= 12)  # from batch 2 of epoch 2 on
    argv = ["--version", "pytorch", *flags(**TINY), "--output_dir", str(tmp_path), "--max_nonfinite_steps=3"]
    code, _, err = main_in_process(argv, capsys)
    assert code == 1 and "Traceback" not in err
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best_model.pt", "checkpoint_epoch_1.pt"]
    assert load_checkpoint(checkpoints / "checkpoint_epoch_1.pt")["epoch"] == 1
    assert re.search(r"not finite for 3 batches in a row \(last at epoch 2, batch 4\); the last good "
                     r"checkpoint is .*checkpoint_epoch_1.pt", caplog.text), caplog.text  # fmt: skip


def test_bf16_on_the_cpu_trains(tmp_path, capsys):
    if sys.platform == "darwin":
        pytest.skip("bf16 autocast support varies on macOS CPUs")
    argv = ["--version", "pytorch", *flags(**{**TINY, "epochs": 1}), "--output_dir", str(tmp_path), "--bf16"]
    code, out, err = main_in_process(argv, capsys)
    assert code == 0, err
    assert "pytorch_version done" in out


def test_fp16_without_cuda_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    argv = ["--version", "pytorch", *flags(**TINY), "--output_dir", str(tmp_path / "x"), "--fp16"]
    assert_one_error_line(*main_in_process(argv, capsys), "--precision fp16 needs a CUDA GPU")
    assert not (tmp_path / "x").exists()
