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
import torch.nn.functional as F
from tqdm import tqdm

from pytorch_version.checkpoint import save_checkpoint
from pytorch_version.decoding import generate
from pytorch_version.model import Transformer
from utils.config import RunConfig, resolve_device
from utils.data import PairDataset, make_loader, make_toy_task, tokenizer_for_task
from utils.metrics import exact_match, token_accuracy
from utils.monitor import InternalsRecorder, write_analysis
from utils.trace_printer import trace_example
from utils.tracking import Tracker, add_file_log
from utils.visualization import plot_training_curves

logger = logging.getLogger(__name__)


def noam_schedule(d_model: int, warmup_steps: int, factor: float = 1.0):
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)  (section 5.3).

    Rises linearly for `warmup_steps`, then decays with the inverse square root of the step.
    Returned as a multiplier for LambdaLR on an optimizer whose base lr is 1.
    """

    def rate(step: int) -> float:
        step = max(step, 1)  # LambdaLR asks for step 0 once, at construction
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return rate


def seq2seq_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, smoothing: float, reduction: str = "mean"
):
    """Cross-entropy over non-PAD positions with label smoothing (section 5.4); mean or sum."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=smoothing,
        reduction=reduction,
    )


def max_new_tokens(cfg: RunConfig, src: torch.Tensor) -> int:
    return cfg.max_length or src.size(1) + 10


@torch.no_grad()
def evaluate(model, loader, tokenizer, references, cfg: RunConfig, device) -> dict[str, float]:
    """Teacher-forced loss and token accuracy, and greedy exact match on the whole set."""
    model.eval()
    total_loss, correct, counted, predictions = 0.0, 0, 0, []
    for batch in loader:
        src, tgt_in, tgt_out = (batch[k].to(device) for k in ("src", "tgt_in", "tgt_out"))
        logits = model(src, tgt_in)
        total_loss += seq2seq_loss(logits, tgt_out, tokenizer.pad_id, 0.0).item() * src.size(0)
        c, n = token_accuracy(logits, tgt_out, tokenizer.pad_id)
        correct, counted = correct + c, counted + n
        outputs = generate(model, src, max_new_tokens(cfg, src))
        predictions += [tokenizer.decode(row) for row in outputs.tolist()]
    return {
        "eval_loss": total_loss / len(references),
        "eval_token_accuracy": correct / max(counted, 1),
        "eval_exact_match": exact_match(predictions, references),
        "eval_examples": predictions[:3],
    }


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


def _unpadded(batch, src_key: str, tgt_key: str, pad_id: int):
    """Row 0 of a batch with its padding cut off: (1, S) and (1, T)."""
    src, tgt = batch[src_key][:1], batch[tgt_key][:1]
    return src[:, : int((src[0] != pad_id).sum())], tgt[:, : int((tgt[0] != pad_id).sum())]


def build_model(cfg: RunConfig, tokenizer) -> Transformer:
    ids = {"pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}
    return Transformer(cfg.model_config(tokenizer.vocab_size, tokenizer.vocab_size, **ids))


def train(cfg: RunConfig, results_name: str = "results_pytorch") -> dict:
    """Train on the configured toy task and write the results folder; returns the summary."""
    # settings that can fail are checked before anything is written or a log handler is attached
    device = resolve_device(cfg.device)
    train_pairs, eval_pairs = make_toy_task(
        cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len
    )
    out = Path(cfg.output_dir) / results_name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    log_handler = add_file_log(out / "logs" / "train.log")
    torch.manual_seed(cfg.seed)

    tokenizer = tokenizer_for_task(cfg.task)
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
        trace = trace_example(model, batch["src"].to(device), batch["tgt_in"].to(device), tokenizer.tokens,
                              cfg.debug_layers, cfg.debug_heads)  # fmt: skip
        logger.info("--debug: forward pass of one example before training\n%s", trace)

    probe = next(iter(make_loader(PairDataset(eval_pairs[:8], tokenizer), 8, False)))
    recorder = None
    if cfg.track_internals:
        recorder = InternalsRecorder(*_unpadded(probe, "src", "tgt_in", tokenizer.pad_id), cfg.track_every)

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
        src, tgt = _unpadded(probe, "src", "tgt_in", tokenizer.pad_id)
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
