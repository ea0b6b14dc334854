"""Faults injected from outside the toolkit, so that tests can interrupt or break a run at a known
point without any test-only code in the toolkit itself.

Both use torch's global optimizer-step hook, which fires after every `optimizer.step()` of any
optimizer in the process: the plain loop of pytorch_version.train and the Trainer alike.

    sigterm_after_step(13)      this process gets SIGTERM right after optimizer step 13, as from `kill`
    fail_after_first_step(1)    rank 1 (of torchrun) raises after its first optimizer step

In-process tests call them and `.remove()` the returned handle; subprocess tests start main.py
through tests/fault_main.py, which reads the same faults from environment variables.
"""

from __future__ import annotations

import os
import signal

from torch.optim.optimizer import register_optimizer_step_post_hook

SIGTERM_AFTER_STEP_ENV = "FAULT_SIGTERM_AFTER_STEP"
FAIL_RANK_ENV = "FAULT_FAIL_RANK"


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


def install_from_env() -> None:
    """The faults that FAULT_SIGTERM_AFTER_STEP=N and FAULT_FAIL_RANK=R ask for."""
    if os.environ.get(SIGTERM_AFTER_STEP_ENV):
        sigterm_after_step(int(os.environ[SIGTERM_AFTER_STEP_ENV]))
    if os.environ.get(FAIL_RANK_ENV):
        fail_after_first_step(int(os.environ[FAIL_RANK_ENV]))
