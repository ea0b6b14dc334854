"""`--version both` on a CPU: the Hugging Face half trains in a second process, alongside the pytorch half.

A model this small keeps one core busy far better than two: its matmuls are too small to split
well (two threads make a training step only about 1.2x faster than one). So on a machine with two
or more cores the halves run at the same time, each on half of the threads, instead of one after
the other on all of them. The child's console (its log lines, its --debug trace) goes to
results_huggingface/logs/console.log and is printed after the pytorch half's, so the two stories
never interleave. The child builds the same initial model from the same seed, so both halves still
start from the same weights (huggingface_version.compare).

Ctrl-C reaches both processes (they share the terminal), and each saves its checkpoint; a SIGTERM
to this process, or a pytorch half that stops for any reason, stops the child the same graceful
way. `--no-parallel_halves` runs the halves one after the other, as on a GPU or under one thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import re
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from utils.runtime.config import RunConfig, UserError

logger = logging.getLogger(__name__)
_CURSOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal control sequences (tqdm's cursor-up)


def threads_for_halves(cfg: RunConfig, device: torch.device) -> tuple[int, int] | None:
    """(threads of the pytorch half, threads of the huggingface half), or None: one after the other."""
    total = torch.get_num_threads()
    if not cfg.parallel_halves or device.type != "cpu" or total < 2:
        return None
    return total // 2, total - total // 2


def console_log(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / "results_huggingface" / "logs" / "console.log"


def _child(settings: dict, threads: int, log_path: str, results) -> None:
    """The huggingface half, in a spawned process whose stdout and stderr go to `log_path`."""
    log = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    from huggingface_version.compare import initial_pytorch_model
    from huggingface_version.train import train_huggingface
    from utils.runtime.resilience import Terminated, TrainingStopped, sigterm_raises

    hf_logging.disable_progress_bar()
    cfg = RunConfig.from_dict(settings)
    try:
        with sigterm_raises():  # training installs its own, graceful handler
            summary = train_huggingface(cfg, init_from_pytorch=initial_pytorch_model(cfg))
        results.put(("done", summary))
    except TrainingStopped as err:
        results.put(("stopped", (str(err), err.exit_code)))
    except (Terminated, KeyboardInterrupt) as err:
        results.put(
            ("stopped", ("the huggingface half was stopped", 143 if isinstance(err, Terminated) else 130))
        )
    except UserError as err:
        results.put(("user_error", str(err)))
    except BaseException as err:  # reported by the parent; the traceback is in the log
        traceback.print_exc()
        results.put(("failed", f"{type(err).__name__}: {err}"))


def train_halves(cfg: RunConfig, threads: tuple[int, int]) -> tuple[dict, dict]:
    """Train pytorch here and huggingface in a child process at once; returns both summaries."""
    from pytorch_version.train import train

    log_path = console_log(cfg)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP state
    results = context.Queue()
    # --quiet: no progress bars in a log file; the HF run still logs one line per epoch
    child = context.Process(
        target=_child, args=({**cfg.to_dict(), "quiet": True}, threads[1], str(log_path), results)
    )
    before = torch.get_num_threads()
    child.start()
    logger.info(
        "--version both: the huggingface half trains alongside (process %d, %d thread(s); this one: %d); "
        "its console goes to %s and is shown after this half's", child.pid, threads[1], threads[0], log_path,
    )  # fmt: skip
    try:  # whatever stops this process (an error, Ctrl-C, SIGTERM, even while waiting) stops the child
        torch.set_num_threads(threads[0])
        try:
            pt_summary = train(cfg)
        finally:
            torch.set_num_threads(before)
        outcome = _outcome(child, results)  # before join: a child blocks on exit until its queue is read
        child.join()
    except BaseException:
        _stop(child, results)
        _replay(log_path)
        raise
    _replay(log_path)
    return pt_summary, _summary_or_raise(outcome, child.exitcode)


def _outcome(child, results, wait: float = float("inf")) -> tuple[str, object]:
    """What the child put on the queue; ("failed", ...) if it exits without a word or `wait` s pass."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if not child.is_alive():  # it may have put its result just before exiting: one last look
                try:
                    return results.get(timeout=1.0)
                except queue.Empty:  # killed before it could say anything (SIGKILL, out of memory)
                    return "failed", "it exited without a result"
    return "failed", f"no result after {wait:.0f} s"


def _stop(child, results) -> None:
    """This half stopped early: ask the child to stop the same way (it saves, then exits), and
    log what it reported, so that an error of its own is not lost."""
    if child.is_alive():
        os.kill(child.pid, signal.SIGTERM)
    kind, value = _outcome(child, results, wait=300)
    if kind in ("failed", "user_error"):
        logger.warning("the huggingface half: %s", value)
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        child.join()


def _replay(log_path: Path) -> None:
    """Print the child's console, without what only made sense live (cursor moves, redrawn bars)."""
    if not log_path.is_file():
        return
    print(f"--- huggingface half (it ran alongside; from {log_path}) ---", flush=True)
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = _CURSOR.sub("", line.split("\r")[-1]).rstrip()
        if line:
            print(line, flush=True)


def _summary_or_raise(outcome: tuple[str, object], exitcode: int | None) -> dict:
    from utils.runtime.resilience import TrainingStopped

    kind, value = outcome
    if kind == "done":
        return value
    if kind == "stopped":
        raise TrainingStopped(*value)
    if kind == "user_error":
        raise UserError(value)
    raise RuntimeError(f"the huggingface half failed ({value}); exit code {exitcode}, see its console above")
