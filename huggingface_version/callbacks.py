"""The Trainer callbacks of a Hugging Face run: its metrics.jsonl, its stops, its --track_internals;
and its wandb run.

MetricsLogCallback writes one record per evaluation with pytorch_version's keys and stops at
--stop_at_exact_match or before an epoch (a language model's round) that would overrun
--time_budget_minutes, as pytorch_version.train does; InternalsCallback drives a
utils.observe.monitor.InternalsRecorder, whose probe runs through the hook tracker of
huggingface_version.hooks. `start_wandb` / `finish_wandb` wrap the Trainer's own WandbCallback.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from utils.runtime.distributed import World, from_rank0
from utils.runtime.tracking import Tracker, epoch_line
from utils.training.recipe import out_of_time

logger = logging.getLogger("huggingface_version.train")  # epoch lines read as the run's own

# what each evaluation record holds besides epoch, step, train_loss, lr and elapsed_s, by task
# (pytorch_version.evaluate's keys): exact match on the toy tasks, the validation loss of a language model
PAIR_KEYS = ("eval_loss", "eval_token_accuracy", "eval_exact_match")
TRANSLATION_KEYS = ("eval_bleu", "eval_lowercase_bleu", "eval_chrf")
LM_KEYS = ("eval_loss", "eval_bits_per_char", "eval_perplexity")
# the encoder-only tasks (pytorch_version.evaluate_encoder's): a classifier's accuracy, a masked LM's
# loss, accuracy and perplexity over the masked tokens
CLASSIFY_KEYS = ("eval_loss", "eval_accuracy")
MLM_KEYS = ("eval_loss", "eval_masked_accuracy", "eval_perplexity")


class MetricsLogCallback(TrainerCallback):
    """One metrics.jsonl record per evaluation, with pytorch_version.train's keys.

    With `stop_at_exact_match` > 0, training stops once held-out exact match reaches it
    (--stop_at_exact_match, as in pytorch_version.train). With `time_budget_minutes` > 0 it stops
    when another epoch would end past the budget (--time_budget_minutes, utils.training.recipe.out_of_time).
    With `announce` (no progress bars: --quiet or a console that is not a terminal, where the
    Trainer's printer is removed) each record is also logged as one line, as pytorch_version logs it.
    `metric_keys`: the evaluation's keys a record holds (LM_KEYS for a language model). `round_steps` > 0
    (a language model, evaluated every --eval_every steps): a record's epoch is the round number,
    and the last round, shorter when --max_steps is not a multiple, logs its training loss too.
    """

    def __init__(self, tracker: Tracker, stop_at_exact_match: float = 0.0, announce: bool = False,
                 time_budget_minutes: float = 0.0, metric_keys: tuple[str, ...] = PAIR_KEYS,
                 round_steps: int = 0) -> None:  # fmt: skip
        self.tracker = tracker
        self.stop_at_exact_match = stop_at_exact_match
        self.time_budget_minutes = time_budget_minutes
        self.announce = announce
        self.metric_keys, self.round_steps = metric_keys, round_steps
        self.start = time.perf_counter()
        self._train: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        history = self.tracker.history  # a resumed run's elapsed_s goes on from its last record
        self.start = time.perf_counter() - (history[-1].get("elapsed_s", 0.0) if history else 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.round_steps and state.global_step >= state.max_steps:  # the last round's training loss
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # the epoch's mean training loss, logged just before evaluation
            self._train = {"train_loss": logs["loss"], "lr": logs.get("learning_rate")}

    def on_evaluate(self, args, state, control, metrics=None, lr_scheduler=None, **kwargs):
        metrics = metrics or {}
        step = state.global_step
        epoch = math.ceil(step / self.round_steps) if self.round_steps else round(state.epoch or 0)
        record = {"epoch": epoch, "step": step, "train_loss": self._train.get("train_loss")}
        for key in self.metric_keys:
            record[key] = metrics.get(key)
        for key in TRANSLATION_KEYS:  # translation
            if key in metrics:
                record[key] = metrics[key]
        # the rate for the next step, as pytorch_version logs it (the Trainer logs the last one used)
        lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else self._train.get("lr")
        record |= {"lr": lr, "elapsed_s": time.perf_counter() - self.start}
        self.tracker.log(record)  # (only rank 0's tracker writes a file under torchrun)
        if self.announce and record["eval_loss"] is not None and record["train_loss"] is not None:
            logger.info(epoch_line(record))
        if self.stop_at_exact_match and (record.get("eval_exact_match") or 0.0) >= self.stop_at_exact_match:
            control.should_training_stop = True
        if self.time_budget_minutes > 0:  # under torchrun every process takes rank 0's decision
            world = World(getattr(args, "process_index", 0), getattr(args, "world_size", 1))
            if from_rank0(world, out_of_time(self.time_budget_minutes, record["elapsed_s"], record["epoch"])):
                logger.info("another epoch would overrun --time_budget_minutes: stopping")
                control.should_training_stop = True


class InternalsCallback(TrainerCallback):
    """--track_internals: hands the model to a utils.observe.monitor.InternalsRecorder after optimizer steps.

    The recorder runs its probe through `run_with_cache`, i.e. through the forward hooks of
    huggingface_version.hooks, and keeps qkv_history / attention_snapshots / attention_maps
    for TransformerVisualizer, exactly as it does inside pytorch_version's loop.
    """

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.recorder.maybe_record(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.recorder.record(model, state.global_step)


def start_wandb(cfg, out: Path, config: dict) -> str:
    """ "wandb" when asked for and it starts (offline without a login), else "none"; never fatal."""
    if not cfg.wandb:
        return "none"
    try:
        import wandb
    except ImportError:
        logger.warning("--wandb: the wandb package is not installed; continuing without it")
        return "none"
    offline = not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ
    try:  # start the run here so a failure is a warning; the Trainer's WandbCallback reuses it
        (out / "logs").mkdir(parents=True, exist_ok=True)
        wandb.init(
            project=cfg.wandb_project,
            name=f"huggingface-{cfg.task}",
            config=config,
            dir=str(out / "logs"),
            mode="offline" if offline else None,
            reinit="finish_previous",
        )
    except Exception as err:  # a tracking failure must never stop training
        logger.warning("--wandb: could not start a run (%s); continuing without it", err)
        return "none"
    return "wandb"


def finish_wandb(report_to: str) -> None:
    if report_to != "wandb":
        return
    import wandb

    run = wandb.run
    if run is not None:
        offline, run_dir = run.settings.mode == "offline", run.dir
        run.finish()
        if offline:
            logger.info("wandb ran offline; upload with: wandb sync %s", Path(run_dir).parent)
