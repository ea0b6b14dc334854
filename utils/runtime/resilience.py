"""Nothing lost, nothing unsafe: atomic writes, a graceful Ctrl-C / SIGTERM, plain RNG states, offline mode.

Shared by both versions:
  atomic_write*      temp file in the same folder + fsync + rename: a crash or a full disk
                     mid-write leaves the previous file as it was; a failure is a one-line WriteError
  GracefulStop       while training, the first Ctrl-C (SIGINT) or SIGTERM only raises a flag; the
                     loop finishes its optimizer step, saves a resumable checkpoint and raises
                     TrainingStopped with the command that resumes (exit code 130 / 143)
  NonFiniteGuard     a NaN/inf loss skips the step; K in a row stop the run (exit code 1)
  rng_state          python, numpy and torch RNG states as plain lists and tensors, so a checkpoint
                     holding them still loads with torch.load(weights_only=True)
  ensure_offline     no network at run time: HF_HUB_OFFLINE=1, WANDB_MODE=offline unless logged in
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from utils.runtime.config import UserError

logger = logging.getLogger(__name__)

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as a shell reports it


class WriteError(UserError, OSError):
    """A results file could not be written (disk full, no permission); the old file is untouched."""


class TrainingStopped(Exception):
    """Training ended early on purpose (a signal, a diverging loss): a message and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---- atomic writes ---------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(f)` on a temporary file next to `path`, fsync it, then rename it over `path`.

    The rename is atomic on POSIX and Windows, so a reader (or a crash at any moment) sees the
    complete old file or the complete new one, never half of each.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise _write_error(path, err) from err
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _write_error(path: Path, err: OSError) -> WriteError:
    reason = err.strerror or str(err) or type(err).__name__
    error = WriteError(f"cannot write {path}: {reason} (an earlier {path.name}, if any, is unchanged)")
    error.errno = err.errno
    return error


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_writable(folder: str | Path) -> Path:
    """Create `folder` and prove a file can be written in it, before any work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"results folder {folder} is not writable: {err.strerror or err}") from err
    return folder


# ---- Ctrl-C and SIGTERM ------------------------------------------------------------------------


class GracefulStop:
    """`with GracefulStop() as stop:` (or install / uninstall) ... `if stop.requested: save, then
    raise stop.interrupted(...)`.

    The first SIGINT or SIGTERM is remembered, not acted on, so the current optimizer step and
    any save in progress complete. A second Ctrl-C raises KeyboardInterrupt at once (the user
    insists; atomic writes still leave every file whole). Outside the main thread, where Python
    cannot install handlers, this does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # the first names the stop (a Ctrl-C, then the parent's SIGTERM)
        logger.warning("%s received: finishing this step, then saving", signal.Signals(signum).name)

    def install(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Put the previous handlers back (safe to call twice)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def interrupted(self, where: str, checkpoint: str | Path, command: str) -> TrainingStopped:
        name = signal.Signals(self.signum).name
        message = f"{name}: training stopped at {where}; saved {checkpoint}; resume with: {command}"
        logger.warning(message)
        return TrainingStopped(message, EXIT_CODES[self.signum])


def resume_command(cfg, checkpoint: str | Path) -> str:
    """`python main.py <every setting that differs from its default> --resume CHECKPOINT` (`--version both`:
    `--resume auto`, which finds each half's own checkpoint)."""
    if cfg.version == "both":
        checkpoint = "auto"
    words = ["python", "main.py"]
    for f in cfg.flags():
        value = getattr(cfg, f.name)
        if f.name == "resume" or (value == f.default and f.name != "version"):
            continue
        if isinstance(value, bool):
            words.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            words += [f"--{f.name}", shlex.quote(str(value))]
    return " ".join([*words, "--resume", shlex.quote(str(checkpoint))])


# ---- NaN / inf ---------------------------------------------------------------------------------


class NonFiniteGuard:
    """Counts batches whose loss is NaN or inf; `limit` of them in a row stop training (0: never)."""

    def __init__(self, limit: int, in_a_row: int = 0) -> None:
        self.limit, self.in_a_row = limit, in_a_row
        self.last_good = ""  # the newest checkpoint saved, named in the final message

    def check(self, loss: float, where: str) -> bool:
        """True for a finite loss. Otherwise log `where`, and raise TrainingStopped at the limit."""
        if math.isfinite(loss):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        logger.warning("non-finite loss (%s) at %s: this optimizer step is skipped", loss, where)
        if self.limit and self.in_a_row >= self.limit:
            kept = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint yet"
            message = (
                f"training stopped: the loss was not finite for {self.in_a_row} batches in a row "
                f"(last at {where}); {kept}; try a lower --lr_factor"
            )
            logger.error(message)
            raise TrainingStopped(message, exit_code=1)
        return False


# ---- random number generators ------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG a training run draws from, as plain lists and tensors."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        name, keys, pos, has_gauss, cached = sys.modules["numpy"].random.get_state()
        state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- no network --------------------------------------------------------------------------------


def ensure_offline() -> None:
    """Nothing in this toolkit downloads: make the libraries agree, unless the user decided otherwise.

    Set before transformers / huggingface_hub are imported (they read these once). wandb stays
    online only for a logged-in user (WANDB_API_KEY or a `wandb login` entry in ~/.netrc).
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Terminated(BaseException):
    """SIGTERM outside the training loop: unwinds like Ctrl-C does (main.py exits with 143)."""


class sigterm_raises:  # lower case: used as a `with` statement, like contextlib's helpers
    """`with sigterm_raises():` SIGTERM raises Terminated (cleanups run, no traceback printed)."""

    def __enter__(self) -> None:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        raise Terminated

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
