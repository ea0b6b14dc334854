"""utils/runtime/console.py: progress bars only on a terminal. A redirected run (a log file, CI) gets
plain epoch lines from both versions, not thousands of carriage-return redraws."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from utils.runtime.console import progress_bars

pytestmark = pytest.mark.slow  # redirected CLI runs

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMALL_RUN = ["--task", "copy", "--train_size", "300", "--eval_size", "50", "--epochs", "1", "--hidden_size",
             "32", "--num_layers", "1", "--num_heads", "2", "--ffn_size", "64"]  # fmt: skip


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    "quiet, tty, bars",
    [(False, True, True), (False, False, False), (True, True, False), (True, False, False)],
)
def test_progress_bars_only_on_a_terminal_and_never_with_quiet(monkeypatch, quiet, tty, bars):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    assert progress_bars(quiet) is bars


def test_no_progress_bars_on_a_stream_that_cannot_say(monkeypatch):
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    monkeypatch.setattr(sys, "stderr", closed)
    assert progress_bars(False) is False
    monkeypatch.setattr(sys, "stderr", None)  # pythonw: no console at all
    assert progress_bars(False) is False


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _on_a_terminal(command: list[str], timeout: float = 120) -> tuple[int, bytes]:
    """Run `command` with stdout and stderr on a pseudo-terminal; its exit code and all it wrote."""
    master, slave = pty.openpty()
    # a new pseudo-terminal is 0 columns wide, and tqdm fits its bar into that: give it a real size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    child = subprocess.Popen(command, cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        output = _read_all(master)
        return child.wait(timeout=timeout), output
    finally:
        os.close(master)


def test_progress_bars_decision_in_a_real_terminal_and_in_a_file(tmp_path):
    probe = "from utils.runtime.console import progress_bars as b; print(b(False), b(True))"
    code, output = _on_a_terminal([sys.executable, "-c", probe])
    assert code == 0 and output.split() == [b"True", b"False"], output
    with open(tmp_path / "log", "w") as log:
        subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=ENV, stdout=log, stderr=log, check=True)
    assert (tmp_path / "log").read_bytes().split() == [b"False", b"False"]


def _main_py(version: str, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "--version", version, *SMALL_RUN, "--output_dir", str(out)]


def _redirected_run(version: str, out: Path) -> str:
    """`python main.py` with stdout and stderr in a file, as CI or `> run.log 2>&1` has them."""
    log = out / "console.log"
    with open(log, "w") as f:
        result = subprocess.run(
            _main_py(version, out), cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=f,
            stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip
    text = log.read_bytes().decode("utf-8")  # not read_text: universal newlines would turn \r into \n
    assert result.returncode == 0, text
    return text


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_a_redirected_run_writes_epoch_lines_and_no_progress_bars(tmp_path, version):
    text = _redirected_run(version, tmp_path)
    assert "\r" not in text, "a progress bar was drawn into the log file"
    assert [line for line in text.splitlines() if line.startswith("epoch 1: train loss ")], text
    assert f"{version}_version done: " in text
    assert "{'loss'" not in text and "'eval_loss'" not in text, "the Trainer's raw log dicts were printed"


def test_a_run_on_a_terminal_still_draws_its_bars(tmp_path):
    code, output = _on_a_terminal(_main_py("pytorch", tmp_path))
    assert code == 0, output.decode(errors="replace")
    assert b"\r" in output.replace(b"\r\n", b"\n"), "no progress bar on a terminal"
    assert b"epoch 1: train loss " in output
