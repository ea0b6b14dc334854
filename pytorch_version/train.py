"""Training the from-scratch Transformer: Adam + Noam warm-up, label smoothing, evaluation.

Writes under `<output_dir>/results_pytorch/`: config.json, summary.json,
checkpoints/{best_model,checkpoint_epoch_N}.pt, logs/{train.log,metrics.jsonl},
training_curves.png; for translation also visualizations/dataset_statistics.png, val.*.hyp.txt
and, with --checkpoint_average, checkpoints/averaged_model.pt (pytorch_version/evaluate.py).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from pytorch_version import resume
from pytorch_version.evaluate import (
    evaluate_average,
    final_evaluation,
    lower_is_better,
    selection_metric,
    selection_score,
)
from pytorch_version.families import build_model  # train.build_model: the model a run starts from
from pytorch_version.resume import INTERRUPTED, Progress, StepCheckpoints, save_resumable
from pytorch_version.run_data import load_run_data
from utils.data.tasks import first_example
from utils.fast import SpeedUps
from utils.figures.training_curves import plot_training_curves
from utils.observe.monitor import InternalsRecorder, write_run_figures
from utils.observe.trace_printer import trace_example
from utils.runtime import precision
from utils.runtime.checkpoint import save_checkpoint, weights_fingerprint
from utils.runtime.config import STEP_TASKS, RunConfig, resolve_device
from utils.runtime.console import progress_bars
from utils.runtime.distributed import (
    World,
    agree_to_stop,
    device_for,
    from_rank0,
    init_world,
    set_epoch,
    shutdown,
    sum_across,
    tokens_per_replica,
    wrap,
)
from utils.runtime.lock import results_folder_lock
from utils.runtime.precision import check_precision
from utils.runtime.resilience import (
    GracefulStop,
    NonFiniteGuard,
    atomic_write_json,
    ensure_writable,
    resume_command,
)
from utils.runtime.tracking import Tracker, add_file_log, epoch_line, file_logs_removed
from utils.training.recipe import optimizer_and_schedule, out_of_time

logger = logging.getLogger(__name__)


def train_one_epoch(model, loader, optimizer, scheduler, cfg: RunConfig, device, desc: str, recorder=None,
                    progress: Progress | None = None, stop: GracefulStop | None = None,
                    guard: NonFiniteGuard | None = None, world: World | None = None,
                    step: torch.nn.Module | None = None, on_step=None) -> float:  # fmt: skip
    """One pass over the data; returns the mean training loss. `recorder` watches internals.

    `step` gives a batch's labelled logits (utils.fast.LabelledLogits over `model`, packed unless
    --no-fast; built here when not given). Under torchrun it is wrapped in DistributedDataParallel.

    `progress` (pytorch_version.resume) says where the pass starts (a resumed run skips the
    batches it trained on before) and is kept up to date. Once `stop` is requested the pass ends
    after the current optimizer step. A batch with a NaN/inf loss is left out and its step skipped.
    `world` says which process this is. `on_step(optimizer_steps)` runs after each optimizer step made
    but an epoch's last (pytorch_version.resume.StepCheckpoints: --save_every_steps).
    """
    model.train()
    speed = SpeedUps.from_flag(cfg.fast)
    world = world or World()
    step = step or wrap(
        speed.labelled_logits(model, model.config.pad_id), world, next(model.parameters()).device
    )
    loss_sum_of = speed.loss_sum()  # the smoothed loss, with its gradient written down unless --no-fast
    progress, stop = progress or Progress(), stop or GracefulStop()
    guard = guard or NonFiniteGuard(cfg.max_nonfinite_steps)
    bar = tqdm(loader, desc=desc, disable=not progress_bars(cfg.quiet), leave=False)
    accum, autocast = cfg.gradient_accumulation_steps, torch.device(device).type
    window_tokens, window_ok = 0, True
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar):
        if i < progress.batches_done:
            continue  # trained on before the run was interrupted: the same batches, in the same order
        src, tgt_in, tgt_out = (batch[k].to(device) for k in ("src", "tgt_in", "tgt_out"))
        labelled = model.labelled(tgt_out)  # the loss needs logits only where there is a label
        tokens = int(labelled.sum())
        last = (i + 1) % accum == 0 or i + 1 == len(loader)  # the window's last batch: a step follows
        # DDP all-reduces gradients during backward; the window's earlier batches add up locally first
        with step.no_sync() if world.distributed and not last else nullcontext():
            with torch.autocast(autocast, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                logits = step(src, tgt_in, labelled)  # (N, V): no logits for padding
            loss_sum = loss_sum_of(logits.float(), tgt_out[labelled], cfg.label_smoothing)
            loss = loss_sum.item() / max(tokens, 1)
            if guard.check(loss, f"epoch {progress.epoch}, batch {i}"):
                loss_sum.backward()  # gradients of the window's batches add up...
                window_tokens += tokens
                progress.add_loss(loss)
            else:
                window_ok = False  # a NaN/inf batch: this whole optimizer step is skipped
                if world.distributed:  # the others wait in backward's all-reduce: join it with zeros
                    (sum(p.sum() for p in model.parameters()) * 0.0).backward()
        progress.batches_done, progress.step = i + 1, progress.step + 1
        if last:
            # ...and are divided by the window's token count: the mean over its tokens, so `accum`
            # batches of B make the same step as one batch of accum * B, whatever their lengths.
            # Under DDP: by global tokens / N, as DDP averages (utils.runtime.distributed)
            divisor, window_ok = tokens_per_replica(world, window_tokens, window_ok)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.div_(divisor)
            if cfg.clip_grad_norm > 0 and window_ok:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            if window_ok:
                optimizer.step()
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if recorder is not None:
                recorder.maybe_record(model, scheduler.last_epoch)  # last_epoch counts optimizer steps
            if on_step is not None and window_ok and i + 1 < len(loader):  # the snapshot above is kept
                on_step(scheduler.last_epoch)
            window_tokens, window_ok = 0, True
            if agree_to_stop(world, stop):  # under torchrun all processes stop after the same step
                break  # a whole step is done: the caller saves a checkpoint to resume from
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return progress.train_loss()


def train(cfg: RunConfig, results_name: str = "results_pytorch") -> dict:
    """Train on the configured task and write the results folder; returns the summary.

    Under torchrun (utils.runtime.distributed) every process trains its share of each global
    batch; rank 0 alone evaluates, writes and returns the summary (the others return {}).
    """
    # settings that can fail are checked before anything is written or a log handler is attached
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, cfg.version, device)
    world = init_world(device, cfg.dist_timeout)  # one process of one unless started by torchrun
    try:  # leave the process group on every way out, so no other process waits for this one
        folder = Path(cfg.output_dir) / results_name
        with results_folder_lock(folder, enabled=world.is_main), file_logs_removed():  # one run a folder
            return _train(cfg, results_name, world, device_for(world, device))
    finally:
        shutdown(world)


def _train(cfg: RunConfig, results_name: str, world: World, device: torch.device) -> dict:
    data = load_run_data(cfg, world, device)  # the task's batches and how a model is scored
    tokenizer, train_loader = data.tokenizer, data.train_loader
    out = Path(cfg.output_dir) / results_name
    main = world.is_main  # only rank 0 writes files, logs metrics and draws figures
    checkpoints = ensure_writable(out / "checkpoints") if main else out / "checkpoints"
    log_handler = add_file_log(out / "logs" / "train.log") if main else None
    torch.manual_seed(cfg.seed)

    data_report = data.report(out) if main else {}  # padding or corpus sizes; translation: a figure
    model = build_model(cfg, tokenizer, data.model_fields).to(device)
    initial_weights = weights_fingerprint(model.state_dict())  # --version both: same start as the HF half?
    steps_per_epoch = -(-len(train_loader) // cfg.gradient_accumulation_steps)  # optimizer steps
    total_steps = cfg.max_steps if cfg.task in STEP_TASKS else cfg.epochs * steps_per_epoch
    optimizer, rate = optimizer_and_schedule(cfg, model, total_steps, SpeedUps.from_flag(cfg.fast).fused_adam)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    progress, saved = Progress(best=-math.inf), None
    resume_from = resume.resume_path(cfg, checkpoints) if cfg.resume else None
    if resume_from is not None:  # before metrics.jsonl is rewritten: a refused resume changes nothing
        progress, saved = resume.restore(
            resume_from, cfg, model, optimizer, scheduler, train_loader, world.size
        )
        initial_weights = None  # this process started from the checkpoint's weights
    cfg = precision.resolve(cfg, device, "pytorch", saved and saved["precision"])  # auto: fp32 or bf16, why
    # the step's forward (packed unless --no-fast), under torchrun in DDP; `model` stays the bare
    # module for saving, decoding and tracing
    step = wrap(SpeedUps.from_flag(cfg.fast).labelled_logits(model, model.config.pad_id), world, device)
    config_record = {"run": cfg.to_dict(), "model": model.config.to_dict(), "processes": world.size}
    tracker = None
    if main:
        atomic_write_json(out / "config.json", config_record)
        tracker = Tracker(out / "logs" / "metrics.jsonl", cfg.wandb, cfg.wandb_project, "pytorch",
                          config_record, history=progress.history)  # fmt: skip
    logger.info("pytorch_version: %s, task=%s, %s, %s parameters, device=%s", cfg.arch, cfg.task,
                data.description, f"{model.num_parameters():,}", device)  # fmt: skip

    if cfg.debug and main:
        src, tgt_in = (t.to(device) for t in data.debug_example)
        trace = trace_example(model, src, tgt_in, tokenizer.tokens, cfg.debug_layers, cfg.debug_heads)
        logger.info("--debug: forward pass of one example before training\n%s", trace)

    probe, recorder = data.probe, None
    if cfg.track_internals and main:
        recorder = InternalsRecorder(*first_example(probe, tokenizer.pad_id), cfg.track_every)
        resume.restore_recorder(recorder, saved)  # a resumed run keeps the snapshots taken before

    start = time.perf_counter() - progress.elapsed_s  # elapsed_s continues over a resume
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, progress.nonfinite_in_a_row)

    def save(path: Path, **extra) -> None:
        progress.elapsed_s, progress.nonfinite_in_a_row = time.perf_counter() - start, guard.in_a_row
        progress.history, progress.world_size = tracker.history, world.size
        save_resumable(path, model, tokenizer, optimizer, scheduler, cfg, progress, recorder, **extra)
        guard.last_good = str(path)

    stop = GracefulStop().install()  # Ctrl-C / SIGTERM: finish the step, save, exit (resilience.py)
    steps = StepCheckpoints(cfg.save_every_steps, checkpoints, save) if main else None  # a hard kill's loss
    try:
        resume.restore_rng(saved)  # dropout goes on with the numbers it would have drawn
        for epoch in range(progress.epoch, data.rounds + 1):
            data.begin_round(epoch)  # lm: the last round may be shorter
            progress.begin_epoch(train_loader)
            set_epoch(train_loader, epoch)  # under torchrun: this epoch's order, the same on every process
            desc = f"{'round' if cfg.task in STEP_TASKS else 'epoch'} {epoch}/{data.rounds}"
            train_one_epoch(model, train_loader, optimizer, scheduler, cfg, device, desc, recorder,
                            progress, stop, guard, world, step, steps)  # fmt: skip
            loss_total, loss_batches = sum_across(world, progress.loss_total, progress.loss_batches)
            train_loss = loss_total / max(loss_batches, 1)  # the mean over every process's batches
            if progress.batches_done < len(train_loader):  # Ctrl-C / SIGTERM mid-epoch
                if main:
                    save(checkpoints / INTERRUPTED)
                where = f"epoch {epoch}, batch {progress.batches_done}/{len(train_loader)}"
                raise stop.interrupted(where, checkpoints / INTERRUPTED,
                                       resume_command(cfg, checkpoints / INTERRUPTED))  # fmt: skip
            record = None
            if main:  # evaluation on rank 0 with the bare model; the others wait for its record
                metrics = data.evaluate(model)
                examples = metrics.pop("eval_examples")
                lr, elapsed = scheduler.get_last_lr()[0], time.perf_counter() - start
                record = {"epoch": epoch, "step": progress.step, "train_loss": train_loss, **metrics,
                          "lr": lr, "elapsed_s": elapsed}  # fmt: skip
                tracker.log(record)
                logger.info("%s %r", epoch_line(record), examples[:2])
            record = from_rank0(world, record)  # every process takes the same decisions below
            improved = selection_score(cfg, record) > progress.best
            progress.best = max(progress.best, selection_score(cfg, record))
            progress.end_epoch(train_loader)
            extra = {"epoch": epoch, "metrics": record, "task": cfg.task}
            if main:
                save(checkpoints / f"checkpoint_epoch_{epoch}.pt", **extra)
                steps.superseded()  # interrupted.pt, step.pt
                if improved:
                    save_checkpoint(checkpoints / "best_model.pt", model, tokenizer, **extra)
            if agree_to_stop(world, stop):  # the signal came during evaluation or saving
                path = checkpoints / f"checkpoint_epoch_{epoch}.pt"
                raise stop.interrupted(f"the end of epoch {epoch}", path, resume_command(cfg, path))
            best = progress.best
            if cfg.stop_at_exact_match and best >= cfg.stop_at_exact_match:
                logger.info("exact match %.4f >= %.4f: stopping early", best, cfg.stop_at_exact_match)
                break
            if epoch < data.rounds and out_of_time(cfg.time_budget_minutes, record["elapsed_s"], epoch):
                logger.info("another epoch would overrun --time_budget_minutes: stopping")
                break
    finally:
        stop.uninstall()
        if main:
            tracker.finish()
            logging.getLogger().removeHandler(log_handler)
    if not main:
        return {}

    plot_training_curves(tracker.history, out / "training_curves.png", f"pytorch_version: {cfg.task}")
    if recorder is not None:
        recorder.record(model, scheduler.last_epoch)
    analyse = cfg.visualize or cfg.track_internals
    figures_error = write_run_figures(
        model, probe, tokenizer, out, recorder, analyse, f"pytorch_version: {cfg.task}"
    )
    finished = data.finish(model, out) if data.finish is not None else {}  # encoder-only: its figures
    last_epoch = {k: v for k, v in tracker.history[-1].items() if k.startswith("eval_")}
    averaged = evaluate_average(cfg, out, tracker.history, data.evaluate, device)  # --checkpoint_average
    summary = {
        "version": "pytorch",
        "task": cfg.task,
        "final": averaged["averaged"] if averaged.get("averaged_is_final") else last_epoch,
        "last_epoch": last_epoch,
        **averaged,
        f"best_{selection_metric(cfg)}": -progress.best if lower_is_better(cfg) else progress.best,
        "wall_time_s": time.perf_counter() - start,
        "steps": scheduler.last_epoch,  # optimizer steps
        **data_report,
        **finished,
        **final_evaluation(cfg, out, data.eval_pairs, tracker.history, device),
        "parameters": model.num_parameters(),
        "initial_weights": initial_weights,
        "config": config_record,
        **({"figures_error": figures_error} if figures_error else {}),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
