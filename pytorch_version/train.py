"""Training the from-scratch Transformer: Adam + Noam warm-up, label smoothing, evaluation.

Writes under `<output_dir>/results_pytorch/`: config.json, summary.json,
checkpoints/{best_model,checkpoint_epoch_N}.pt, logs/{train.log,metrics.jsonl},
training_curves.png.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pytorch_version.checkpoint import save_checkpoint
from pytorch_version.evaluate import evaluate
from pytorch_version.model import Transformer
from utils.config import RunConfig, resolve_device
from utils.data import PairDataset, first_example, load_task_data, make_loader
from utils.monitor import InternalsRecorder, write_analysis
from utils.trace_printer import trace_example
from utils.tracking import Tracker, add_file_log
from utils.training import noam_schedule, seq2seq_loss
from utils.visualization import plot_training_curves

logger = logging.getLogger(__name__)


def train_one_epoch(
    model, loader, optimizer, scheduler, cfg: RunConfig, device, desc: str, recorder=None
) -> float:
    """One pass over the data; returns the mean training loss. `recorder` watches internals."""
    model.train()
    progress = tqdm(loader, desc=desc, disable=cfg.quiet, leave=False)
    accum = cfg.gradient_accumulation_steps
    total, batches, window_tokens = 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(progress):
        src, tgt_in, tgt_out = (batch[k].to(device) for k in ("src", "tgt_in", "tgt_out"))
        tokens = int((tgt_out != model.config.pad_id).sum())
        loss_sum = seq2seq_loss(model(src, tgt_in), tgt_out, model.config.pad_id, cfg.label_smoothing, "sum")
        loss_sum.backward()  # gradients of the window's batches add up...
        window_tokens += tokens
        loss = loss_sum.detach() / max(tokens, 1)
        if (i + 1) % accum == 0 or i + 1 == len(loader):
            # ...and are divided by the window's token count: the mean over its tokens, so `accum`
            # batches of B make the same step as one batch of accum * B, whatever their lengths
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.div_(max(window_tokens, 1))
            window_tokens = 0
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if recorder is not None:
                recorder.maybe_record(model, scheduler.last_epoch)  # last_epoch counts optimizer steps
        total, batches = total + loss.item(), batches + 1
        progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return total / max(batches, 1)


def build_model(cfg: RunConfig, tokenizer) -> Transformer:
    ids = {"pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}
    return Transformer(cfg.model_config(tokenizer.vocab_size, tokenizer.vocab_size, **ids))


def train(cfg: RunConfig, results_name: str = "results_pytorch") -> dict:
    """Train on the configured toy task and write the results folder; returns the summary."""
    # settings that can fail are checked before anything is written or a log handler is attached
    device = resolve_device(cfg.device)
    train_pairs, eval_pairs, tokenizer = load_task_data(cfg)
    out = Path(cfg.output_dir) / results_name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    log_handler = add_file_log(out / "logs" / "train.log")
    torch.manual_seed(cfg.seed)

    train_loader = make_loader(
        PairDataset(train_pairs, tokenizer), cfg.batch_size, True, cfg.seed, cfg.dataloader_num_workers
    )
    eval_loader = make_loader(PairDataset(eval_pairs, tokenizer), 256, False)
    model = build_model(cfg, tokenizer).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, noam_schedule(cfg.hidden_size, cfg.warmup_steps, cfg.lr_factor)
    )
    config_record = {"run": cfg.to_dict(), "model": model.config.to_dict()}
    (out / "config.json").write_text(json.dumps(config_record, indent=2))
    tracker = Tracker(out / "logs" / "metrics.jsonl", cfg.wandb, cfg.wandb_project, "pytorch", config_record)
    logger.info(
        "pytorch_version: task=%s, %d train / %d eval examples, %s parameters, device=%s",
        cfg.task, len(train_pairs), len(eval_pairs), f"{model.num_parameters():,}", device,
    )  # fmt: skip

    if cfg.debug:
        batch = next(iter(eval_loader))  # a fixed held-out example; the training order stays untouched
        src, tgt_in = (t.to(device) for t in first_example(batch, tokenizer.pad_id))
        trace = trace_example(model, src, tgt_in, tokenizer.tokens, cfg.debug_layers, cfg.debug_heads)
        logger.info("--debug: forward pass of one example before training\n%s", trace)

    probe = next(iter(make_loader(PairDataset(eval_pairs[:8], tokenizer), 8, False)))
    recorder = None
    if cfg.track_internals:
        recorder = InternalsRecorder(*first_example(probe, tokenizer.pad_id), cfg.track_every)

    start, best, step = time.perf_counter(), -1.0, 0
    references = [t for _, t in eval_pairs]
    try:
        for epoch in range(1, cfg.epochs + 1):
            train_loss = train_one_epoch(
                model,
                train_loader,
                optimizer,
                scheduler,
                cfg,
                device,
                f"epoch {epoch}/{cfg.epochs}",
                recorder,
            )
            step += len(train_loader)
            metrics = evaluate(model, eval_loader, tokenizer, references, cfg, device)
            examples = metrics.pop("eval_examples")
            record = {"epoch": epoch, "step": step, "train_loss": train_loss, **metrics,
                      "lr": scheduler.get_last_lr()[0], "elapsed_s": time.perf_counter() - start}  # fmt: skip
            tracker.log(record)
            logger.info(
                "epoch %d: train loss %.4f | eval loss %.4f, token acc %.4f, exact match %.4f (%.0fs) %r",
                epoch, train_loss, record["eval_loss"], record["eval_token_accuracy"],
                record["eval_exact_match"], record["elapsed_s"], examples[:2],
            )  # fmt: skip
            extra = {"epoch": epoch, "metrics": record}
            save_checkpoint(out / "checkpoints" / f"checkpoint_epoch_{epoch}.pt", model, tokenizer, **extra)
            if record["eval_exact_match"] > best:
                best = record["eval_exact_match"]
                save_checkpoint(out / "checkpoints" / "best_model.pt", model, tokenizer, **extra)
            if cfg.stop_at_exact_match and best >= cfg.stop_at_exact_match:
                logger.info("exact match %.4f >= %.4f: stopping early", best, cfg.stop_at_exact_match)
                break
    finally:
        tracker.finish()
        logging.getLogger().removeHandler(log_handler)

    plot_training_curves(tracker.history, out / "training_curves.png", f"pytorch_version: {cfg.task}")
    if cfg.visualize or cfg.track_internals:
        if recorder is not None:
            recorder.record(model, scheduler.last_epoch)
        src, tgt = first_example(probe, tokenizer.pad_id)
        write_analysis(model, *(probe[k].to(device) for k in ("src", "tgt_in", "tgt_out")),
                       tokenizer.tokens(src[0]), tokenizer.tokens(tgt[0]), tokenizer.id_to_token, out,
                       recorder)  # fmt: skip
    final = tracker.history[-1]
    summary = {
        "version": "pytorch",
        "task": cfg.task,
        "final": {k: final[k] for k in ("eval_loss", "eval_token_accuracy", "eval_exact_match")},
        "best_eval_exact_match": best,
        "wall_time_s": time.perf_counter() - start,
        "parameters": model.num_parameters(),
        "config": config_record,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
