"""One run per results folder (utils/runtime/lock.py): a second run into a folder another run is writing
stops at once with one line naming it, and a lock left by a killed run is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import main
from tests.robust_helpers import ENV, ROOT

TINY = ["--hidden_size", "32", "--ffn_size", "64", "--num_layers", "1", "--num_heads", "4", "--quiet",
        "--device", "cpu", "--train_size", "300", "--eval_size", "20",
        "--checkpoint_average", "0"]  # fmt: skip


def _hold(folder: Path) -> subprocess.Popen:
    """Another process holding the lock of `folder` (as a training run would), until it is killed."""
    code = ("import sys, time; from utils.runtime.lock import results_folder_lock\n"
            "with results_folder_lock(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(120)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_held_folder_stops_with_one_line_and_changes_nothing(tmp_path, capsys):
    folder = tmp_path / "results_pytorch"
    folder.mkdir()
    (folder / "summary.json").write_text('{"kept": true}')
    holder = _hold(folder)
    try:
        code = main.main(["--epochs", "1", "--output_dir", str(tmp_path), *TINY])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"pid {holder.pid}" in err and "is being written by another run" in err
        assert sorted(p.name for p in folder.iterdir()) == ["summary.json"]
        assert (folder / "summary.json").read_text() == '{"kept": true}'
        hf = main.main(["--version", "huggingface", "--epochs", "1", "--output_dir", str(tmp_path), *TINY])
        assert hf == 0  # the other version's folder is free
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "results_pytorch"
    holder = _hold(folder)
    os.kill(holder.pid, signal.SIGKILL)  # no chance to let go
    holder.wait()
    owner = json.loads((tmp_path / "results_pytorch.lock").read_text())
    assert owner["pid"] == holder.pid  # what it left behind
    with caplog.at_level("INFO"):
        assert main.main(["--epochs", "1", "--output_dir", str(tmp_path), *TINY]) == 0
    assert f"took over the lock of another run (pid {holder.pid}" in caplog.text
    assert not (tmp_path / "results_pytorch.lock").exists()  # let go and removed at the end


def test_version_both_stops_before_either_half_starts_when_one_folder_is_held(tmp_path, capsys):
    holder = _hold(tmp_path / "results_huggingface")
    try:
        code = main.main(["--version", "both", "--epochs", "1", "--output_dir", str(tmp_path), *TINY])
        err = capsys.readouterr().err.strip()
        assert code == 2 and f"pid {holder.pid}" in err and len(err.splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["results_huggingface.lock"]  # the holder's only
    finally:
        holder.kill()
        holder.wait()
