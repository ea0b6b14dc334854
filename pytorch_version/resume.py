"""Resuming pytorch_version training exactly where it stopped: `--resume PATH` and `--resume auto`.

A resumable checkpoint is an ordinary checkpoint (weights, model config, tokenizer: plain types
and tensors, so it loads with `torch.load(weights_only=True)`) plus
  run_config      every setting of the run, so a resume with other settings is refused by name
  training_state  optimizer and scheduler state, the RNG states (utils.runtime.resilience.rng_state) and
                  `Progress`: the epoch, the batches of it already trained on, the data order,
                  the metrics so far and the best exact match

Which batches come next: the loader's shuffling generator is saved as it was at the *start* of
the epoch, with the number of batches already trained on; the resumed run rewinds the generator,
draws the same permutation and skips that many batches. Dropout draws from torch's global RNG,
restored too. So on the CPU an interrupted-then-resumed run ends with bitwise the same weights as
one that never stopped (tests/robust/test_robust_resume.py).

Written: checkpoints/checkpoint_epoch_N.pt after every epoch, checkpoints/interrupted.pt when
Ctrl-C or SIGTERM stops a run mid-epoch, and with --save_every_steps N checkpoints/step.pt every N
optimizer steps (`StepCheckpoints`: a SIGKILL gives no chance to save, so this bounds what it loses).
interrupted.pt and step.pt are removed once an epoch checkpoint supersedes them. best_model.pt holds
weights only, for decoding. Every write is atomic (a temporary `.NAME.*.tmp` renamed over NAME), so
a kill during a save leaves the previous file whole and a temporary file, which is never resumed from
and is removed by the next run (it holds the folder's lock, so no other run is writing it).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from utils.fast import SpeedUps
from utils.runtime.checkpoint import load_checkpoint, save_checkpoint
from utils.runtime.compatibility import describe_differences, resume_differences
from utils.runtime.config import RunConfig, UserError
from utils.runtime.resilience import rng_state, set_rng_state

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted.pt"
STEP = "step.pt"  # --save_every_steps: the newest step checkpoint
_EPOCH_FILE = re.compile(r"checkpoint_epoch_(\d+)\.pt$")


@dataclass
class Progress:
    """Where a run is, beyond its weights: everything a resumed run needs to continue it exactly."""

    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # batches of `epoch` already trained on (skipped when resuming)
    step: int = 0  # batches trained on since the start of the run (metrics.jsonl's "step")
    best: float = -1.0  # best held-out exact match so far (decides best_model.pt)
    loss_total: float = 0.0  # sum of the per-batch mean losses of `epoch` so far...
    loss_batches: int = 0  # ...and how many there were: the epoch's train_loss is their mean
    nonfinite_in_a_row: int = 0  # NaN/inf batches in a row (utils.runtime.resilience.NonFiniteGuard)
    elapsed_s: float = 0.0  # training time before this process started (wall clock)
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records so far
    epoch_data_state: torch.Tensor | None = None  # the shuffling generator at the start of `epoch`
    world_size: int = 1  # processes of the run (torchrun); batches_done counts global batches

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batches_done

    def begin_epoch(self, loader) -> None:
        """Remember the data order of this epoch before its first batch is drawn."""
        self.epoch_data_state = loader.generator.get_state()

    def end_epoch(self, loader) -> None:
        """Move on to the next epoch, whose data order is the generator's state now."""
        self.epoch, self.batches_done, self.loss_total, self.loss_batches = self.epoch + 1, 0, 0.0, 0
        self.begin_epoch(loader)

    def add_loss(self, loss: float) -> None:
        self.loss_total, self.loss_batches = self.loss_total + loss, self.loss_batches + 1

    def train_loss(self) -> float:
        return self.loss_total / max(self.loss_batches, 1)


def save_resumable(path, model, tokenizer, optimizer, scheduler, cfg: RunConfig, progress: Progress,
                   recorder=None, **extra: Any) -> None:  # fmt: skip
    """A checkpoint that `restore` can continue from (written atomically, like every checkpoint)."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "progress": dataclasses.asdict(progress),
    }
    if recorder is not None:  # --track_internals: the snapshots so far, so the figures cover the whole run
        state["recorder"] = {name: getattr(recorder, name) for name in _RECORDER_FIELDS}
    save_checkpoint(path, model, tokenizer, run_config=cfg.to_dict(), training_state=state, **extra)


_RECORDER_FIELDS = ("qkv_history", "attention_snapshots", "attention_maps")


def resume_path(cfg: RunConfig, checkpoints: Path) -> Path | None:
    """The checkpoint `--resume` names; for `auto` the complete one furthest into training, of any kind
    (checkpoint_epoch_N.pt, step.pt, interrupted.pt; None: start anew). A file that does not load
    (damaged after it was written: the toolkit's own writes are atomic) is passed over with a warning;
    if every one is damaged the resume is refused rather than a new run overwriting the folder."""
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        if path.is_dir() and any((path / name).exists() for name in ("trainer_state.json", "config.json")):
            raise UserError(
                f"--resume {path} is a Hugging Face folder; --version pytorch resumes from a .pt file "
                f"such as {checkpoints / INTERRUPTED} (or resume it with --version huggingface)"
            )
        return path
    epochs = sorted(checkpoints.glob("checkpoint_epoch_*.pt"), key=_epoch_number, reverse=True)
    found, skipped = [], []
    for path in [checkpoints / STEP, checkpoints / INTERRUPTED, *epochs]:
        if path in epochs and any(p in epochs for _, p in found):
            break  # the newest epoch checkpoint that loads is enough: older ones are behind it
        try:
            if path.is_file():
                found.append((Progress(**load_checkpoint(path)["training_state"]["progress"]).position, path))
        except (UserError, KeyError, TypeError) as err:
            logger.warning("--resume auto: skipping %s (%s)", path, err)
            skipped.append(f"{path.name}: {err}")
    if not found and skipped:
        raise UserError(f"--resume auto: no checkpoint in {checkpoints} can be resumed from ({skipped[0]}); "
                        "remove the damaged files to start anew")  # fmt: skip
    if not found:
        logger.info("--resume auto: no resumable checkpoint in %s; starting a new run", checkpoints)
        return None
    return max(found, key=lambda item: item[0])[1]


class StepCheckpoints:
    """--save_every_steps N: checkpoints/step.pt, resumable like interrupted.pt, every N optimizer steps.

    `train_one_epoch` calls it after each optimizer step that was made (and its --track_internals
    snapshot, which the checkpoint keeps), except at an epoch's end, where the epoch's checkpoint is
    written anyway. `save(path)` is the loop's own saving (pytorch_version.train), so the file holds the
    mid-epoch position, optimizer, schedule and RNG states as interrupted.pt does.
    """

    def __init__(self, every: int, checkpoints: Path, save) -> None:
        self.every, self.path, self.save = every, checkpoints / STEP, save
        for stale in checkpoints.glob(".*.pt.*.tmp"):  # a save cut short by a kill (atomic_write's temp)
            stale.unlink(missing_ok=True)
            logger.info("removed %s, left by a save that was cut short", stale)

    def __call__(self, optimizer_steps: int) -> None:
        if self.every and optimizer_steps % self.every == 0:
            self.save(self.path)

    def superseded(self) -> None:
        """An epoch checkpoint is further: step.pt and interrupted.pt are behind it."""
        for path in (self.path, self.path.with_name(INTERRUPTED)):
            path.unlink(missing_ok=True)


def _epoch_number(path: Path) -> int:
    match = _EPOCH_FILE.search(path.name)
    return int(match[1]) if match else -1


def restore(path: Path, cfg: RunConfig, model, optimizer, scheduler, loader,
            world_size: int = 1) -> tuple[Progress, dict]:  # fmt: skip
    """Load a resumable checkpoint into the freshly built run; refuses other settings, by name.

    A run on N processes with --batch_size B resumes on M processes with --batch_size N*B/M: what
    must match is the global batch (utils.runtime.distributed), whose count is `batches_done`.

    Returns the progress and the saved training state, whose "rng" the caller restores right
    before the first batch (nothing else may draw random numbers after it), and whose "precision"
    is the one the saved run computed in.
    """
    data = load_checkpoint(path)
    state = data.get("training_state")
    if not isinstance(state, dict) or not isinstance(data.get("run_config"), dict):
        raise UserError(
            f"{path} holds weights only, no training state to resume (best_model.pt is for decoding); "
            "resume from checkpoint_epoch_N.pt or interrupted.pt"
        )
    saved, wanted = data["run_config"], cfg.to_dict()
    progress_state = state.get("progress")
    saved_world = progress_state.get("world_size", 1) if isinstance(progress_state, dict) else 1
    if saved_world != world_size and saved.get("max_tokens"):  # each process took every N-th batch
        raise UserError(f"cannot resume from {path} with {world_size} process(es): its --max_tokens "
                        f"batches were shared by {saved_world}; resume with torchrun "
                        f"--nproc_per_node={saved_world}")  # fmt: skip
    if (saved_world, world_size) != (1, 1) and isinstance(saved.get("batch_size"), int):
        # what must match is the global batch: per process x processes
        got, want = saved["batch_size"] * saved_world, cfg.batch_size * world_size
        if got == want:
            saved, wanted = {**saved, "batch_size": got}, {**wanted, "batch_size": want}
        else:
            saved = {**saved, "batch_size": f"{saved['batch_size']} x {saved_world} processes"}
            wanted = {**wanted, "batch_size": f"{cfg.batch_size} x {world_size} processes"}
    differences = resume_differences(saved, wanted)
    differences = differences or describe_differences(data["model_config"], model.config.to_dict())
    if differences:
        raise UserError(
            f"cannot resume from {path}: it belongs to a run with other settings ({differences}); "
            "give the flags of that run"
        )
    try:
        model.load_state_dict(data["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the saved run's --fast/--no-fast came with its state
            group["fused"] = SpeedUps.from_flag(cfg.fast).fused_adam
        scheduler.load_state_dict(state["scheduler"])
        progress = Progress(**state["progress"])
        loader.generator.set_state(progress.epoch_data_state)
        if not isinstance(state["rng"].get("torch"), torch.Tensor):
            raise ValueError("no torch RNG state")
        chosen = saved.get("precision", "bf16" if saved.get("bf16") else "fp32")  # bf16: older files
        if chosen not in ("fp32", "bf16"):
            raise ValueError(f"precision {chosen!r}")
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        raise UserError(f"checkpoint {path} has a damaged training state: {reason}") from err
    logger.info(
        "resuming from %s: epoch %d, %d batches of it already done, step %d",
        path, progress.epoch, progress.batches_done, progress.step,
    )  # fmt: skip
    return progress, {**state, "precision": chosen}  # what --precision auto goes on with


def restore_rng(state: dict | None) -> None:
    """The RNG states of a resumed run, restored right before its first batch."""
    if state is not None:
        set_rng_state(state["rng"])


def restore_recorder(recorder, state: dict | None) -> None:
    """--track_internals: the snapshots a resumed run had taken before it stopped."""
    if recorder is not None and state is not None and "recorder" in state:
        for name in _RECORDER_FIELDS:
            setattr(recorder, name, state["recorder"][name])
