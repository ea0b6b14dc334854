"""Resuming huggingface_version training: the Trainer's own checkpoints, plus what the toolkit adds.

The Trainer saves `results_huggingface/checkpoint-N/` after every epoch (save_strategy="epoch"):
model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json. `--resume PATH`
hands such a folder to `trainer.train(resume_from_checkpoint=...)`, which restores the weights,
optimizer, schedule and RNG states and skips the batches already seen. `--resume auto` picks the
newest complete one. What the Trainer does not keep is added by `ResumeCallback` as
`tutorial_state.pt` (plain types, loaded with weights_only=True), written last, so its presence
marks a complete checkpoint:
  run_config  the settings, so a resume with other ones is refused by name
  optimizer   OPTIMIZER, so a checkpoint whose optimizer.pt this version cannot load is refused
  history     the metrics.jsonl records so far, and the training losses of the unfinished epoch
  recorder    the --track_internals snapshots

Ctrl-C or SIGTERM: the callback asks the Trainer to save a checkpoint after the current optimizer
step and stop (control.should_save / should_training_stop); train.py then exits with the command
that resumes. --save_every_steps N: the callback also asks for a save every N optimizer steps within
an epoch (the epoch's end saves anyway), so a SIGKILL loses at most N steps; of those step-only
folders (marked "step_only" in tutorial_state.pt) the newest is kept, older ones are removed once a
newer checkpoint is complete. Before a save into a folder that exists, its tutorial_state.pt is removed
first, so a kill mid-save never leaves old and new files under a mark of completeness.

Nothing from a checkpoint folder runs code: huggingface_version/folders.py checks it first.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from huggingface_version.folders import pickle_refusal, weights_refusal
from utils.runtime.checkpoint import atomic_save
from utils.runtime.compatibility import resume_differences
from utils.runtime.config import RunConfig, UserError
from utils.runtime.resilience import GracefulStop, WriteError, resume_command

logger = logging.getLogger(__name__)

STATE_FILE = "tutorial_state.pt"
# whose optimizer state optimizer.pt holds: the Trainer's AdamW (two parameter groups, decay / no decay;
# weight decay 0). Checkpoints of earlier versions, whose trainer built one torch Adam, lack this mark.
OPTIMIZER = "transformers AdamW"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _refusal(folder: Path) -> str:
    """Why `folder` cannot be resumed from ('' when it can)."""
    if not (folder / "trainer_state.json").is_file():
        return f"{folder} is not a Trainer checkpoint (no trainer_state.json in it)"
    if refusal := weights_refusal(folder):
        return refusal
    if not (folder / STATE_FILE).is_file():
        return f"{folder} is incomplete (no {STATE_FILE}: its saving was cut short)"
    for name in ("trainer_state.json", "config.json"):  # the Trainer reads both before anything else
        if not (folder / name).is_file():
            continue
        try:
            if not isinstance(json.loads((folder / name).read_text(encoding="utf-8")), dict):
                return f"{folder / name} is not a JSON object"
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return f"{folder / name} is unreadable: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return pickle_refusal(folder)


def resume_checkpoint(cfg: RunConfig, out: Path) -> Path | None:
    """The checkpoint-N folder `--resume` names; for `auto` the newest complete one (None: start anew)."""
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        if path.is_file():
            raise UserError(
                f"--resume {path} is a file (a pytorch_version checkpoint?); --version huggingface resumes "
                f"from a checkpoint folder such as {out}/checkpoint-N"
            )
        if not path.is_dir():
            raise UserError(f"--resume: checkpoint folder not found: {path}")
        if refusal := _refusal(path):
            raise UserError(refusal)
        return path
    found = sorted((int(m[1]), p) for p in out.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name)))
    damaged = []
    for _, path in reversed(found):
        if not (path / STATE_FILE).is_file():  # written last: its saving was cut short (a kill, a full disk)
            logger.warning("--resume auto: skipping %s, incomplete (no %s: its saving was cut short)", path,
                           STATE_FILE)  # fmt: skip
        elif refusal := _refusal(path):  # complete once, but not loadable now
            logger.warning("--resume auto: skipping %s", refusal)
            damaged.append(refusal)
        else:
            return path
    if damaged:  # rather than a new run overwriting the folder
        raise UserError(f"--resume auto: no checkpoint in {out} can be resumed from ({damaged[0]})")
    logger.info("--resume auto: no complete checkpoint in %s; starting a new run", out)
    return None


def load_state(path: Path, cfg: RunConfig) -> dict:
    """The toolkit's part of a checkpoint, after checking the run's settings match the flags."""
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        saved = state["run_config"]
    except Exception as err:
        reason = (str(err).splitlines() or [""])[0]
        raise UserError(f"{path / STATE_FILE} is unreadable: {type(err).__name__}: {reason}") from err
    if state.get("optimizer") != OPTIMIZER:  # the Trainer's optimizer.load_state_dict would raise
        raise UserError(
            f"cannot resume from {path}: an earlier version of the toolkit wrote it, with an optimizer state "
            "(one torch Adam) that the Trainer's AdamW cannot continue; start the run anew without --resume"
        )
    wanted = cfg.to_dict()
    differences = resume_differences(saved, wanted)
    if differences:
        raise UserError(
            f"cannot resume from {path}: it belongs to a run with other settings ({differences}); "
            "give the flags of that run"
        )
    logger.info("resuming from %s: step %s", path, path.name.removeprefix("checkpoint-"))
    return state


def _remove_older_step_checkpoints(newest: Path) -> None:
    """--save_every_steps: the step-only checkpoints before `newest` (complete now) are superseded."""
    number = int(_CHECKPOINT.match(newest.name)[1])
    for path in newest.parent.glob("checkpoint-*"):
        m = _CHECKPOINT.match(path.name)
        if not m or int(m[1]) >= number or not (path / STATE_FILE).is_file():
            continue
        try:
            step_only = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True).get("step_only")
        except Exception:  # not ours to judge: left as it is
            continue
        if step_only is True:
            (path / STATE_FILE).unlink()  # first: a kill during the removal leaves it incomplete, not mixed
            shutil.rmtree(path, ignore_errors=True)


class disk_errors_in:  # lower case: a `with` statement, like contextlib's helpers
    """`with disk_errors_in(folder):` a full disk or a refused write (which the Trainer's own saving
    raises as a plain OSError) becomes a one-line WriteError; earlier checkpoints stay as they were."""

    CODES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, traceback) -> None:
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.errno in self.CODES:
            raise WriteError(
                f"cannot write in {self.folder}: {err.strerror} (earlier checkpoints are intact)"
            ) from err


class resume_errors_in:  # lower case: a `with` statement
    """`with resume_errors_in(checkpoint, resumer):` around trainer.train(resume_from_checkpoint=...):
    what the Trainer raises while it reads the checkpoint (trainer_state.json, the weights, optimizer.pt,
    scheduler.pt, rng_state.pth), before its first step, is one line naming the checkpoint: a file that
    passed `_refusal`'s checks yet does not fit (a tensor of another shape, a state of another kind)."""

    def __init__(self, checkpoint: Path | None, resumer: ResumeCallback) -> None:
        self.checkpoint, self.resumer = checkpoint, resumer

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, traceback) -> None:
        if self.checkpoint is None or self.resumer.resumed or not isinstance(err, Exception):
            return
        if isinstance(err, UserError):
            return
        reason = (str(err).splitlines() or [""])[0][:300]
        raise UserError(f"cannot resume from {self.checkpoint}: {type(err).__name__}: {reason}") from err


def save_model_atomically(trainer, out: Path) -> None:
    """trainer.save_model into a temporary folder, then each file renamed into `out` (the weights,
    config.json, generation_config.json, the tokenizer's files and the model's .py files).

    Each rename is atomic, so a crash leaves every file either old and whole or new and whole.
    """
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".saving-"))
    try:
        trainer.save_model(str(tmp))
        for item in tmp.iterdir():
            if item.is_file():
                item.replace(out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ResumableSampler(Sampler):
    """A (batch) sampler that first replays the draws of the epochs a resumed run has behind it.

    The Trainer, resuming at epoch e, does not iterate epochs 0..e-1 again; their draws from the
    shared generator (the DataLoader's base seed, the sampler's permutations) are made here before
    the first pass, so epoch e gets the order it had in the run that was interrupted.
    `passes_done` is asked at that moment, when the Trainer has restored its state.
    """

    def __init__(self, inner, generator: torch.Generator, passes_done) -> None:
        self.inner, self.generator, self.passes_done = inner, generator, passes_done
        self.started = False

    def __iter__(self):
        if not self.started:
            self.started = True
            for _ in range(self.passes_done()):
                torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the base seed
                for _ in self.inner:
                    pass
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class ResumeCallback(TrainerCallback):
    """Graceful Ctrl-C / SIGTERM for the Trainer, and tutorial_state.pt in every checkpoint."""

    def __init__(self, cfg: RunConfig, trainer, tracker, recorder=None, state: dict | None = None) -> None:
        self.cfg, self.trainer, self.tracker, self.recorder = cfg, trainer, tracker, recorder
        self.stop = GracefulStop()
        self.last_saved: Path | None = None
        self.step_only = False  # the coming save is one of --save_every_steps alone
        self.resumed = False  # the Trainer has read the checkpoint it resumes from (resume_errors_in)
        if state is not None:  # a resumed run: what the Trainer does not restore itself
            self.trainer._batch_losses = list(state.get("batch_losses", []))
            self.trainer.guard.in_a_row = state.get("nonfinite_in_a_row", 0)
            if recorder is not None and "recorder" in state:
                for name, value in state["recorder"].items():
                    setattr(recorder, name, value)

    def on_train_begin(self, args, state, control, **kwargs):
        self.stop.install()

    def on_step_begin(self, args, state, control, **kwargs):
        self.resumed = True

    def on_step_end(self, args, state, control, **kwargs):
        every, epoch_end = self.cfg.save_every_steps, float(state.epoch or 0).is_integer()
        if self.stop.requested:  # save after this optimizer step, then leave the loop
            control.should_save = control.should_training_stop = True
        elif every and state.global_step % every == 0 and not control.should_save and not epoch_end:
            control.should_save = self.step_only = True  # --save_every_steps (an epoch's end saves anyway)
        self._unmark(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stop.requested and not float(state.epoch or 0).is_integer():
            # stopped mid-epoch: the checkpoint is saved already; no evaluation of half an epoch
            control.should_evaluate = control.should_save = False
        self._unmark(args, state, control)

    def _unmark(self, args, state, control) -> None:
        """A save is coming into checkpoint-STEP: if that folder exists (a run resumed from an earlier
        checkpoint saves it again), it is incomplete from now until its new tutorial_state.pt."""
        if control.should_save and state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE).unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        saved = {
            "run_config": self.cfg.to_dict(),
            "optimizer": OPTIMIZER,
            "history": list(self.tracker.history),
            "batch_losses": list(self.trainer._batch_losses),
            "nonfinite_in_a_row": self.trainer.guard.in_a_row,
            "step_only": self.step_only and not float(state.epoch or 0).is_integer(),
        }
        self.last_saved = self.trainer.guard.last_good = folder
        step_only = self.step_only and not float(state.epoch or 0).is_integer()  # an epoch's end: kept
        self.step_only = False
        if not state.is_world_process_zero:  # under torchrun rank 0 writes
            return
        if self.recorder is not None:
            saved["recorder"] = {n: getattr(self.recorder, n) for n in ("qkv_history", "attention_snapshots",
                                                                        "attention_maps")}  # fmt: skip
        atomic_save(saved, folder / STATE_FILE)
        if step_only or self.cfg.save_every_steps:
            _remove_older_step_checkpoints(folder)

    def on_train_end(self, args, state, control, **kwargs):
        self.resumed = True
        self.stop.uninstall()

    def raise_if_stopped(self, state) -> None:
        """After trainer.train() returned: a signal ended it, so exit with the resume command."""
        if self.stop.requested:
            where = f"step {state.global_step} (epoch {state.epoch or 0:.2f})"
            raise self.stop.interrupted(where, self.last_saved, resume_command(self.cfg, self.last_saved))
