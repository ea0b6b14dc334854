"""One run per results folder: a run holds a lock on the folder it writes while it trains.

Two runs started into the same --output_dir would interleave their logs/metrics.jsonl lines and
leave summary.json and the checkpoints of whichever wrote last, with nothing saying so. So a run
takes `FOLDER.lock` (beside the folder, so that the folder itself is created only once the lock is
held) before it writes anything there: an OS-level lock (`fcntl.flock`; on Windows `filelock`'s),
with who holds it (pid, start, command) written inside. A second run into the same folder stops at
once with one line naming the first. The file is removed when the run lets go, so a run that could
not start leaves nothing behind.

The operating system releases the lock when its process ends, however it ends (a SIGKILL too), so a
lock file left by a killed run is free to take: the next run takes it over and says whose it was.
Under torchrun only rank 0 writes, so only rank 0 locks; --version both locks each half's folder in
the process that writes it; --resume takes the lock like any run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from utils.runtime.errors import UserError

logger = logging.getLogger(__name__)


def _describe(owner: dict) -> str:
    if not owner:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"another run (pid {owner.get('pid')}, started {started}: {owner.get('command', '?')})"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _acquire(path: Path) -> int | None:
    """An open descriptor of `path` holding its lock, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the run before may have removed the file between our open and our lock: take the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def results_folder_lock(folder: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of `folder` for the block; UserError at once when another run holds it."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    made = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]  # removed again if empty
    path = folder.with_name(folder.name + ".lock")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path) if fcntl is not None else -1
    except OSError as err:
        _remove_empty(made)
        raise UserError(f"results folder {folder} is not writable: {err.strerror or err}") from err
    if fcntl is None:  # Windows
        try:
            with _filelock(path):
                yield
        finally:
            _remove_empty(made)
        return
    if fd is None:
        _remove_empty(made)
        raise UserError(f"{folder} is being written by {_describe(_read(path))}; wait for it to end or "
                        "choose another --output_dir") from None  # fmt: skip
    try:
        previous = _read(path)
        if previous:  # its process ended without letting go (killed)
            logger.info("took over the lock of %s, which had ended without releasing it", _describe(previous))
        me = {"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it; then let go
        os.close(fd)
        _remove_empty(made)


def assert_free(folder: str | Path) -> None:
    """UserError now if another run holds `folder` (--version both asks for its three folders before
    starting either half; each half then takes its own)."""
    with results_folder_lock(folder):
        pass


def _remove_empty(folders: list[Path]) -> None:
    """The folders the lock had to make, if nothing was written in them (a run that could not start)."""
    for folder in folders:  # the deepest first
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def _filelock(path: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".win")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{path.with_suffix('')} is being written by another run; wait for it to end or "
                        "choose another --output_dir") from None  # fmt: skip
    try:
        yield
    finally:
        lock.release()
