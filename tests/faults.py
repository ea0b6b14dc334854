"""Faults injected from outside the toolkit, so that tests can interrupt or break a run at a known
point without any test-only code in the toolkit itself.

The step faults use torch's global optimizer-step hook, which fires after every `optimizer.step()` of
any optimizer in the process: the plain loop of pytorch_version.train and the Trainer alike. The save
fault wraps torch.save, which both versions' checkpoint writing calls.

    sigterm_after_step(13)      this process gets SIGTERM right after optimizer step 13, as from `kill`
    fail_after_first_step(1)    rank 1 (of torchrun) raises after its first optimizer step
    sigkill_after_step(14)      SIGKILL (no handler runs, nothing is saved) right after optimizer step 14
    sigkill_in_save("step.pt", 2)  SIGKILL in the middle of the 2nd write of step.pt: torch.save has
                                written it, half of it is cut off again, and the process dies before
                                the write can finish (an atomic write's temporary file, or the Trainer's
                                optimizer.pt in checkpoint-N/, is left half-written)
    ctrl_c_after_step(13, path) after optimizer step 13, wait for `path` to exist, then SIGINT to the
                                whole process group, as Ctrl-C in a terminal (--version both: both halves)

In-process tests call them and `.remove()` the returned handle; subprocess tests start main.py
through tests/fault_main.py, which reads the same faults from environment variables.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

SIGTERM_AFTER_STEP_ENV = "FAULT_SIGTERM_AFTER_STEP"
FAIL_RANK_ENV = "FAULT_FAIL_RANK"
SIGKILL_AFTER_STEP_ENV = "FAULT_SIGKILL_AFTER_STEP"
SIGKILL_IN_SAVE_ENV = "FAULT_SIGKILL_IN_SAVE"  # NAME:K, the K-th write of a file named NAME
CTRL_C_ENV = "FAULT_CTRL_C_AFTER_STEP"  # N:PATH


def sigterm_after_step(step: int):
    """Send this process SIGTERM once, right after its `step`-th optimizer step."""
    done = [0]

    def hook(optimizer, args, kwargs) -> None:
        done[0] += 1
        if done[0] == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return register_optimizer_step_post_hook(hook)


def fail_after_first_step(rank: int):
    """Raise in the process of torchrun rank `rank` once it has made one optimizer step."""

    def hook(optimizer, args, kwargs) -> None:
        if int(os.environ.get("RANK", "0")) == rank:
            raise RuntimeError(f"rank {rank} fails on purpose (a test)")

    return register_optimizer_step_post_hook(hook)


def sigkill_after_step(step: int):
    """SIGKILL this process right after its `step`-th optimizer step, before anything saves it."""
    done = [0]

    def hook(optimizer, args, kwargs) -> None:
        done[0] += 1
        if done[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return register_optimizer_step_post_hook(hook)


def sigkill_in_save(name: str, nth: int) -> None:
    """SIGKILL this process during the `nth` torch.save of a file called `name` (directly, as the
    Trainer saves, or through atomic_write's temporary `.name.*.tmp`), leaving it half-written."""
    import torch

    original, seen = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            target = Path(f).name
        else:  # atomic_write's os.fdopen file: its name is the descriptor (Linux: /proc names the path)
            target = Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).name
        original(obj, f, *args, **kwargs)
        if target == name or (target.startswith(f".{name}.") and target.endswith(".tmp")):
            seen[0] += 1
            if seen[0] == nth:
                if hasattr(f, "flush"):
                    f.flush()
                    size = os.fstat(f.fileno()).st_size
                    os.ftruncate(f.fileno(), size // 2)
                else:
                    os.truncate(f, os.path.getsize(f) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def ctrl_c_after_step(step: int, path: str, wait: float = 60.0):
    """After this process's `step`-th optimizer step, wait until `path` exists (another process got
    that far), then send SIGINT to the process group: a terminal's Ctrl-C, which every process gets."""
    import time

    done = [0]

    def hook(optimizer, args, kwargs) -> None:
        done[0] += 1
        if done[0] == step:
            deadline = time.monotonic() + wait
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.killpg(os.getpgrp(), signal.SIGINT)

    return register_optimizer_step_post_hook(hook)


def install_from_env() -> None:
    """The faults that FAULT_SIGTERM_AFTER_STEP=N, FAULT_FAIL_RANK=R, FAULT_SIGKILL_AFTER_STEP=N,
    FAULT_SIGKILL_IN_SAVE=NAME:K and FAULT_CTRL_C_AFTER_STEP=N:PATH ask for."""
    if os.environ.get(SIGTERM_AFTER_STEP_ENV):
        sigterm_after_step(int(os.environ[SIGTERM_AFTER_STEP_ENV]))
    if os.environ.get(FAIL_RANK_ENV):
        fail_after_first_step(int(os.environ[FAIL_RANK_ENV]))
    if os.environ.get(SIGKILL_AFTER_STEP_ENV):
        sigkill_after_step(int(os.environ[SIGKILL_AFTER_STEP_ENV]))
    if os.environ.get(CTRL_C_ENV):
        step, path = os.environ[CTRL_C_ENV].split(":", 1)
        ctrl_c_after_step(int(step), path)
    if os.environ.get(SIGKILL_IN_SAVE_ENV):
        name, nth = os.environ[SIGKILL_IN_SAVE_ENV].rsplit(":", 1)
        sigkill_in_save(name, int(nth))
