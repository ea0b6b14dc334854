"""Nothing unsafe on disk or on the wire: atomic writes survive a kill, a failed rename and a full disk;
no test can reach the network.

How the network is kept out: tests/conftest.py loads tests/no_network/sitecustomize.py, which makes
socket.connect (and DNS look-ups) raise for any non-loopback address, and puts that folder first on
PYTHONPATH so every `python main.py` a test starts loads it too. The suite also passes inside a
network namespace with nothing but loopback up (`unshare -n sh -c 'ip link set lo up; python -m pytest
-q tests'`), where no connection could leave the machine even without the guard.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.robust_helpers import ENV, ROOT, TINY, assert_one_error_line, flags, main_in_process
from utils.runtime.checkpoint import atomic_save, load_checkpoint
from utils.runtime.resilience import WriteError, atomic_write_json, atomic_write_text

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: killed and signalled processes

WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from utils.runtime.checkpoint import atomic_save
big = {{"format": "x", "weights": torch.randn(2_000_000)}}
for i in range(10_000):
    big["i"] = i
    atomic_save(big, {path!r})
    print("saved", i, flush=True)
"""


def test_a_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL (no cleanup at all) at some moment of a save loop: the file is still whole."""
    path = tmp_path / "model.pt"
    code = WRITER.format(root=str(ROOT), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert child.stdout.readline().startswith("saved 0")  # one complete save, then kill mid-stream
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    data = torch.load(path, weights_only=True)
    assert data["weights"].shape == (2_000_000,) and data["i"] >= 0
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".model.pt.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_a_failed_rename_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": torch.ones(3)}, path)
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(WriteError, match=r"cannot write .*ckpt.pt: Input/output error"):
        atomic_save({"v": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_disk_full_while_writing_json_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"ok": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as info:
        atomic_write_text(path, "x" * 10_000)
    assert "\n" not in str(info.value) and "No space left on device" in str(info.value)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert path.read_text() == '{\n  "ok": 1\n}\n'


def test_disk_full_during_training_is_one_line_and_the_earlier_checkpoint_survives(
    tmp_path, capsys, monkeypatch
):
    args = ["--version", "pytorch", *flags(**TINY), "--output_dir", str(tmp_path)]
    code, _, err = main_in_process([*args, "--epochs", "1"], capsys)
    assert code == 0, err
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    real_save = torch.save

    def save_until_full(obj, f, *a, **kw):  # the checkpoint of epoch 2 hits a full disk half-way
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save_until_full)
    line = assert_one_error_line(*main_in_process([*args, "--resume", "auto"], capsys), "No space left")
    assert "checkpoint_epoch_2.pt" in line
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before, "an earlier file changed"
    load_checkpoint(checkpoints / "checkpoint_epoch_1.pt")


def test_a_results_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = ["--version", "pytorch", *flags(**TINY)]
    assert_one_error_line(*main_in_process([*args, "--output_dir", str(blocker)], capsys), "is not writable")
    assert blocker.read_text() == "not a folder"

    def read_only(*a, **kw):  # what a read-only folder does to a non-root user
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    line = assert_one_error_line(
        *main_in_process([*args, "--output_dir", str(tmp_path)], capsys), "Permission"
    )
    assert "results_pytorch" in line and not list((tmp_path / "results_pytorch").rglob("*.pt"))


def test_sockets_to_the_outside_are_refused_here_and_in_child_processes():
    with pytest.raises(ConnectionRefusedError, match="blocked"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routable anyway
    with pytest.raises(ConnectionRefusedError, match="blocked"):
        socket.getaddrinfo("huggingface.co", 443)
    probe = (
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
        "except OSError as e:\n    print(type(e).__name__, e)"
    )
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=30)
    assert child.stdout.startswith("ConnectionRefusedError network access is blocked"), child.stdout
    with socket.create_server(("127.0.0.1", 0)) as server:  # loopback stays usable (wandb offline uses it)
        try:
            socket.create_connection(server.getsockname(), timeout=1).close()
        except ConnectionRefusedError:
            raise
        except OSError:  # no loopback interface up at all, e.g. a bare `unshare -n`
            pass


def test_the_cli_sets_offline_modes_for_the_libraries():
    probe = (
        "import os, main; main.ensure_offline(); e = os.environ; print(e['HF_HUB_OFFLINE'], e['WANDB_MODE'])"
    )
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "WANDB_MODE", "WANDB_API_KEY")}
    env["HOME"] = "/nonexistent"  # no ~/.netrc wandb login
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT)
    assert child.stdout.split() == ["1", "offline"], child.stderr


def test_sigterm_outside_training_exits_143_without_a_traceback(tmp_path):
    """Waiting for --interactive input, not training: SIGTERM unwinds and exits 143."""
    from pytorch_version.model import Transformer
    from tests.conftest import tiny_config
    from utils.data.tasks import tokenizer_for_task
    from utils.runtime.checkpoint import save_checkpoint

    tokenizer = tokenizer_for_task("copy")
    model = Transformer(tiny_config(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size))
    save_checkpoint(tmp_path / "tiny.pt", model, tokenizer)
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        "--checkpoint",
        str(tmp_path / "tiny.pt"),
        "--interactive",
    ]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)  # fmt: skip
    assert child.stdout.readline().startswith("Type an input")  # now it waits on stdin
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr and "main.py: terminated" in stderr
