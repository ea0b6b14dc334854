"""Experiment logging: a log file, one JSON line per record, and optional Weights & Biases.

wandb is never required: if the package is missing or fails to start, the run goes on
and says so once. Without a login (no WANDB_API_KEY) it runs offline and prints the
`wandb sync` command that uploads the run later.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from utils.runtime.resilience import atomic_write_text

logger = logging.getLogger(__name__)


def epoch_line(record: dict) -> str:
    """The console line of one epoch's metrics record, the same in both versions."""
    if "eval_bits_per_char" in record:  # a language model: a round of --eval_every steps
        return (f"step {record['step']}: train loss {record['train_loss']:.4f} | validation loss "
                f"{record['eval_loss']:.4f} nats/token, {record['eval_bits_per_char']:.3f} bits/char, "
                f"perplexity {record['eval_perplexity']:.2f} ({record['elapsed_s']:.0f}s)")  # fmt: skip
    if "eval_masked_accuracy" in record:  # a masked LM: a round of --eval_every steps
        return (f"step {record['step']}: train loss {record['train_loss']:.4f} | masked tokens: loss "
                f"{record['eval_loss']:.4f} nats, accuracy {record['eval_masked_accuracy']:.4f}, perplexity "
                f"{record['eval_perplexity']:.2f} ({record['elapsed_s']:.0f}s)")  # fmt: skip
    if "eval_accuracy" in record:  # a classifier
        return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} | eval loss "
                f"{record['eval_loss']:.4f}, accuracy {record['eval_accuracy']:.4f} "
                f"({record['elapsed_s']:.0f}s)")  # fmt: skip
    return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} | "
            f"eval loss {record['eval_loss']:.4f}, token acc {record['eval_token_accuracy']:.4f}, "
            f"exact match {record['eval_exact_match']:.4f} ({record['elapsed_s']:.0f}s)")  # fmt: skip


@contextmanager
def file_logs_removed():
    """`with file_logs_removed():` the file logs (add_file_log) the block attached are removed and closed
    however it ends: a run refused after its train.log was opened (a --resume it cannot continue) must
    not go on receiving the records of whatever the process does next."""
    root = logging.getLogger()
    before = set(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in before and isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()


def add_file_log(path: Path) -> logging.Handler:
    """Send the toolkit's log records to `path` too (removed by the caller when done).

    The toolkit's loggers are lowered to INFO when nothing configured them: called from Python
    instead of main.py (no logging.basicConfig), the root logger's default WARNING level would
    otherwise drop every progress record and leave train.log empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    for name in ("pytorch_version", "huggingface_version", "utils"):
        package_logger = logging.getLogger(name)
        if package_logger.level == logging.NOTSET and package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
    return handler


class Tracker:
    """Writes metrics to `metrics.jsonl` and, when asked, to a wandb run."""

    def __init__(
        self,
        jsonl_path: Path | None,
        use_wandb: bool = False,
        project: str = "transformer-tutorial",
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        wandb_dir: Path | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        """`history`: the records of the run so far, when it is resumed; metrics.jsonl starts with them.
        `jsonl_path` None: records are kept in memory only (torchrun's ranks other than 0)."""
        self.path = Path(jsonl_path) if jsonl_path is not None else None
        self.history: list[dict[str, Any]] = list(history or [])
        if self.path is not None:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))
        self.wandb_run = None
        if use_wandb:
            self.wandb_run = _start_wandb(project, run_name, config, wandb_dir or self.path.parent)

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a line appended whole: a crash loses at most the record being written
        if self.wandb_run is not None:
            step = record.get("step")
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def finish(self) -> None:
        if self.wandb_run is not None:
            offline = self.wandb_run.settings.mode == "offline"
            run_dir = self.wandb_run.dir
            self.wandb_run.finish()
            if offline:
                logger.info("wandb ran offline; upload with: wandb sync %s", Path(run_dir).parent)
            self.wandb_run = None


def _start_wandb(project, run_name, config, directory: Path):
    try:
        import wandb
    except ImportError:
        logger.warning("--wandb: the wandb package is not installed; continuing without it")
        return None
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"  # no login: keep the run on disk, sync later
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(project=project, name=run_name, config=config, dir=str(directory))
    except Exception as err:  # a tracking failure must never stop training
        logger.warning("--wandb: could not start a run (%s); continuing without it", err)
        return None
