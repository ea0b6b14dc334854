"""Hard kills: a run killed with SIGKILL (no handler runs, nothing is saved) at any moment, then
`--resume auto`, loses at most the optimizer steps since its last step checkpoint (--save_every_steps)
and ends with bitwise the weights and metrics of a run never stopped. And `--version both` stopped by
Ctrl-C resumes both halves with one `--resume auto`.

The kills are real SIGKILLs, at known moments (tests/faults.py, through tests/fault_main.py): right
after optimizer step N, or in the middle of the write of a named file, which is left half-written.
TINY trains 10 optimizer steps an epoch, 2 epochs; metrics' and progress' "step" counts batches, which
with no gradient accumulation are optimizer steps.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pytorch_version.train import train
from tests.faults import CTRL_C_ENV, SIGKILL_AFTER_STEP_ENV, SIGKILL_IN_SAVE_ENV
from tests.robust_helpers import (
    ENV,
    ROOT,
    TINY,
    assert_same_tensors,
    flags,
    main_in_process,
    metrics_without_time,
    run_main,
)
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.config import RunConfig

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # slow: killed processes

KILLED = -signal.SIGKILL  # subprocess's returncode for a process a signal ended


def _pytorch_args(folder: Path, **extra) -> list[str]:
    return ["--version", "pytorch", *flags(**{**TINY, **extra}), "--output_dir", str(folder)]


def _uninterrupted(folder: Path, **extra) -> Path:
    """results_pytorch/ of the same run trained in one go, in this process, without step checkpoints:
    that saving them changes nothing is part of what the comparison shows."""
    train(
        RunConfig.from_dict({"version": "pytorch", "output_dir": str(folder), **TINY, **extra})
    )  # as main.py
    return folder / "results_pytorch"


def _final(results: Path) -> dict:
    data = load_checkpoint(results / "checkpoints" / "checkpoint_epoch_2.pt")
    return {"model": data["model_state"], "optimizer": data["training_state"]["optimizer"]}


def _step_of(path: Path) -> int:
    return load_checkpoint(path)["training_state"]["progress"]["step"]


def _resume_in_process(args: list[str], capsys, caplog) -> str:
    """The last `--resume auto`, run to the end in this process; its log."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code, out, err = main_in_process([*args, "--resume", "auto"], capsys)
    assert code == 0, err
    assert "Traceback" not in out + err
    return caplog.text


def test_transformer_killed_early_mid_epoch_and_while_saving_resumes_to_the_same_weights(
    tmp_path, capsys, caplog
):
    args = _pytorch_args(tmp_path / "run", save_every_steps=3)
    checkpoints = tmp_path / "run" / "results_pytorch" / "checkpoints"

    # 1. early: after step 2, before the first step checkpoint (step 3): nothing to resume, 2 steps lost
    killed = run_main(*args, env={SIGKILL_AFTER_STEP_ENV: "2"})
    assert killed.returncode == KILLED, killed.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == []

    # 2. mid-epoch: the resume starts a new run; killed after step 14, step.pt holds step 12: 2 lost
    killed = run_main(*args, "--resume", "auto", env={SIGKILL_AFTER_STEP_ENV: "14"})
    assert killed.returncode == KILLED, killed.stderr
    assert "starting a new run" in killed.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best_model.pt",
        "checkpoint_epoch_1.pt",
        "step.pt",
    ]
    assert _step_of(checkpoints / "step.pt") == 12

    # 3. during a save: resumed at step 12, killed halfway through writing step 18's step.pt (the second
    # of this process: 15, 18); the old step.pt (step 15) stays whole beside the half-written temp file
    killed = run_main(*args, "--resume", "auto", env={SIGKILL_IN_SAVE_ENV: "step.pt:2"})
    assert killed.returncode == KILLED, killed.stderr
    assert "resuming from " + str(
        checkpoints / "step.pt"
    ) + ": epoch 2, 2 batches of it already done, step 12" in (killed.stderr)
    temp = [p.name for p in checkpoints.iterdir() if p.name.startswith(".step.pt.")]
    assert len(temp) == 1 and temp[0].endswith(".tmp")
    assert _step_of(checkpoints / "step.pt") == 15  # 3 steps lost: 16, 17, 18

    # 4. the resume that finishes: from step 15, the temp file removed, never read
    log = _resume_in_process(args, capsys, caplog)
    assert (
        "resuming from " + str(checkpoints / "step.pt") + ": epoch 2, 5 batches of it already done, step 15"
        in log
    )
    assert f"removed {checkpoints / temp[0]}" in log
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "averaged_model.pt", "best_model.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt",
    ]  # fmt: skip
    assert not (tmp_path / "run" / "results_pytorch.lock").exists()
    results = tmp_path / "run" / "results_pytorch"
    assert json.loads((results / "summary.json").read_text())["steps"] == 20

    expected = _uninterrupted(tmp_path / "whole")
    assert_same_tensors(_final(results), _final(expected))
    assert metrics_without_time(results) == metrics_without_time(expected)


def test_gpt_killed_while_writing_its_epoch_checkpoint_resumes_from_the_step_checkpoint(
    tmp_path, capsys, caplog
):
    args = _pytorch_args(tmp_path / "run", arch="gpt", save_every_steps=3)
    checkpoints = tmp_path / "run" / "results_pytorch" / "checkpoints"
    killed = run_main(*args, env={SIGKILL_IN_SAVE_ENV: "checkpoint_epoch_1.pt:1"})
    assert killed.returncode == KILLED, killed.stderr
    assert "checkpoint_epoch_1.pt" not in {p.name for p in checkpoints.iterdir()}  # only its temp file
    assert _step_of(checkpoints / "step.pt") == 9  # 1 step lost (10), and epoch 1's evaluation

    log = _resume_in_process(args, capsys, caplog)
    assert "epoch 1, 9 batches of it already done, step 9" in log
    results = tmp_path / "run" / "results_pytorch"
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert "step.pt" not in {p.name for p in checkpoints.iterdir()}  # superseded by the epoch checkpoints
    expected = _uninterrupted(tmp_path / "whole", arch="gpt")
    assert_same_tensors(_final(results), _final(expected))
    assert metrics_without_time(results) == metrics_without_time(expected)


def test_huggingface_killed_while_the_trainer_saves_resumes_from_the_last_complete_checkpoint(
    tmp_path, capsys, caplog
):
    from huggingface_version.train import train_huggingface

    args = ["--version", "huggingface", *flags(**TINY), "--save_every_steps", "4", "--output_dir",
            str(tmp_path / "run")]  # fmt: skip
    out = tmp_path / "run" / "results_huggingface"
    # optimizer.pt is written at steps 4, 8, 10 (epoch 1), 12 and 16: killed halfway through step 16's
    killed = run_main(*args, env={SIGKILL_IN_SAVE_ENV: "optimizer.pt:5"})
    assert killed.returncode == KILLED, killed.stderr
    # the newest step-only folder is kept, older ones (4, 8) removed; checkpoint-16 is cut short
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-10",
        "checkpoint-12",
        "checkpoint-16",
    ]
    assert not (out / "checkpoint-16" / "tutorial_state.pt").exists()

    log = _resume_in_process(args, capsys, caplog)  # 4 steps lost: 13 to 16
    assert f"skipping {out / 'checkpoint-16'}, incomplete" in log
    assert f"resuming from {out / 'checkpoint-12'}: step 12" in log
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    assert json.loads((out / "summary.json").read_text())["steps"] == 20

    train_huggingface(RunConfig(version="huggingface", output_dir=str(tmp_path / "whole"), **TINY))
    expected = tmp_path / "whole" / "results_huggingface"
    final, whole = load_file(out / "model.safetensors"), load_file(expected / "model.safetensors")
    assert final.keys() == whole.keys() and all(torch.equal(final[k], whole[k]) for k in final)
    assert metrics_without_time(out) == metrics_without_time(expected)


def test_version_both_stopped_by_ctrl_c_resumes_both_halves_with_one_resume_auto(tmp_path, capsys, caplog):
    args = ["--version", "both", *flags(**TINY), "--output_dir", str(tmp_path)]
    hf = tmp_path / "results_huggingface"
    # the halves train at once (2 threads: one each); Ctrl-C to the process group once the pytorch half
    # has made 13 steps and the huggingface half has saved its first epoch, so both are mid-epoch 2
    env = {
        **ENV,
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        CTRL_C_ENV: f"13:{hf / 'checkpoint-10' / 'tutorial_state.pt'}",
    }
    command = [sys.executable, str(ROOT / "tests" / "fault_main.py"), *args]
    stopped = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, start_new_session=True
    )  # fmt: skip  (its own group: the Ctrl-C stays in it)
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert "--- huggingface half" in stopped.stdout, "the halves did not train alongside"
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    assert _step_of(checkpoints / "interrupted.pt") == 13
    saved = sorted(
        int(p.name.split("-")[1]) for p in hf.glob("checkpoint-*") if (p / "tutorial_state.pt").exists()
    )
    assert saved and saved[0] == 10, saved
    resume = [line for line in stopped.stderr.splitlines() if "resume with: " in line]
    assert resume and resume[0].endswith("--resume auto"), resume  # the one command for both halves

    log = _resume_in_process(args, capsys, caplog)  # one thread here: the halves one after the other
    assert f"resuming from {checkpoints / 'interrupted.pt'}: epoch 2, 3 batches" in log
    assert f"resuming from {hf / f'checkpoint-{saved[-1]}'}" in log
    for name in ("results_pytorch", "results_huggingface"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["steps"] == 20
    assert (tmp_path / "results_comparison" / "comparison.json").is_file()
    assert not os.path.exists(checkpoints / "interrupted.pt")


FAMILY_RUNS = [("pytorch", "bert", "majority"), ("pytorch", "vit", "digits"),
               ("huggingface", "gpt", "reversal"), ("huggingface", "bert", "majority")]  # fmt: skip


@pytest.mark.parametrize("version, arch, task", FAMILY_RUNS, ids=[f"{v}-{a}" for v, a, _ in FAMILY_RUNS])
def test_every_family_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, capsys, caplog, version, arch,
                                                                   task):  # fmt: skip
    """SIGKILL after optimizer step 7 with --save_every_steps 4: steps 5-7 are lost, and the resumed
    run ends with bitwise the weights (and the optimizer's state) and metrics of one never killed."""
    settings = {**TINY, "arch": arch, "task": task}
    args = ["--version", version, *flags(**settings), "--output_dir", str(tmp_path / "run")]
    killed = run_main(*args, "--save_every_steps", "4", env={SIGKILL_AFTER_STEP_ENV: "7"})
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    log = _resume_in_process([*args, "--save_every_steps", "4"], capsys, caplog)
    assert "step 4" in log, log[-2000:]
    code, _, err = main_in_process(["--version", version, *flags(**settings), "--output_dir",
                                    str(tmp_path / "whole")], capsys)  # fmt: skip
    assert code == 0, err
    results, expected = (tmp_path / name / f"results_{version}" for name in ("run", "whole"))
    if version == "pytorch":
        assert_same_tensors(_final(results), _final(expected))
    else:
        final, whole = load_file(results / "model.safetensors"), load_file(expected / "model.safetensors")
        assert final.keys() == whole.keys() and all(torch.equal(final[k], whole[k]) for k in final)
    assert metrics_without_time(results) == metrics_without_time(expected)


def _holds(lock: Path, pid: int) -> bool:
    """Has process `pid` taken the results folder's lock (a killed run's stale one names another pid)?"""
    try:
        return json.loads(lock.read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def _start_holding(args: list[str], lock: Path) -> tuple[subprocess.Popen, float]:
    """`python main.py ARGS` started, once it holds its results folder's lock: (process, that moment)."""
    import time

    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not _holds(lock, process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return process, time.monotonic()


def test_killed_at_three_random_moments_a_run_ends_where_an_unkilled_one_ends(tmp_path, capsys, caplog):
    """SIGKILL from outside at moments drawn at random (seeded): each between 10% and 60% of the time
    an unkilled run holds its folder (building the model, an optimizer step, an evaluation, a save,
    whatever it is doing then). Three kills, each into the resume of the one before; the last resume
    ends with bitwise the weights and metrics of the run never killed."""
    import random
    import time

    settings = {**TINY, "train_size": 2400, "epochs": 2}  # 75 steps an epoch
    whole = ["--version", "pytorch", *flags(**settings), "--output_dir", str(tmp_path / "whole")]
    process, held = _start_holding(whole, tmp_path / "whole" / "results_pytorch.lock")
    assert process.wait(timeout=120) == 0, process.stderr.read()[-3000:]
    span = time.monotonic() - held  # how long a whole run holds its folder
    args = [*whole[:-1], str(tmp_path / "run"), "--save_every_steps", "5"]
    lock, step = (
        tmp_path / "run" / "results_pytorch.lock",
        tmp_path / "run" / "results_pytorch" / "checkpoints",
    )
    draw, codes, saved = random.Random(22), [], []
    for kill in range(3):
        process, held = _start_holding([*args, *(["--resume", "auto"] if kill else [])], lock)
        time.sleep(max(0.0, held + draw.uniform(0.1, 0.6) * span - time.monotonic()))
        process.kill()
        codes.append(process.wait(timeout=60))
        assert codes[-1] in (KILLED, 0), process.stderr.read()[-3000:]
        resumable = [*step.glob("checkpoint_epoch_*.pt"), *step.glob("step.pt")] if step.exists() else []
        saved.append(max((_step_of(path) for path in resumable), default=0))
    assert codes.count(KILLED) >= 2, codes  # the moments fell inside the runs, not after them
    with capsys.disabled():  # shown with pytest -s
        print(f"\nexit codes {codes}; after each kill the furthest checkpoint is at step {saved} of 150")
    _resume_in_process(args, capsys, caplog)
    expected = tmp_path / "whole" / "results_pytorch"
    assert_same_tensors(_final(tmp_path / "run" / "results_pytorch"), _final(expected))
    assert metrics_without_time(tmp_path / "run" / "results_pytorch") == metrics_without_time(expected)
