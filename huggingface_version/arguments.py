"""The Trainer's settings for a run: the toolkit's recipe in transformers' own terms
(Seq2SeqTrainingArguments), in the precision utils.runtime.precision resolved."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import Seq2SeqTrainingArguments

from utils.fast import SpeedUps
from utils.runtime.config import ENCODER_ONLY, STEP_TASKS, RunConfig
from utils.runtime.console import progress_bars
from utils.training.recipe import ADAM_BETAS, ADAM_EPS, GPT_BETAS, GPT_EPS, MIN_LR_RATIO, noam_peak


def training_arguments(cfg: RunConfig, out: Path, device: torch.device):
    """The run's Seq2SeqTrainingArguments: the recipe in transformers' own terms.

    Noam (--lr_schedule noam, the paper's): Adam (section 5.3) is `adamw_torch`, torch.optim.AdamW, which
    with weight_decay 0 is Adam, betas (0.9, 0.98), eps 1e-9 (`adamw_torch_fused` the same in one kernel:
    utils/fast's fused_adam). `inverse_sqrt` rises linearly over `warmup_steps` to `learning_rate`, then
    decays as (warmup / step)^0.5; with the schedule's peak as learning_rate it is
    utils.training.recipe.noam_schedule at every step, the first (rate 0) included.
    Cosine (--lr_schedule cosine, a GPT's): AdamW at --learning_rate with betas (0.9, 0.99), eps 1e-8 and
    --weight_decay on the matrices (the Trainer leaves biases and LayerNorms out, as recipe.decays does),
    `cosine_with_min_lr` down to a tenth (min_lr_rate 0.1): recipe.cosine_schedule at every step.
    Pacing: an epoch a pass over the pairs (evaluated, logged and saved each epoch); a language model runs
    --max_steps steps, evaluated, logged and saved every --eval_every (and after the last).
    --save_every_steps is not `save_steps` here: that would replace the epoch's checkpoints, which
    --checkpoint_average reads; resume.ResumeCallback asks for the extra saves instead.
    """
    fused = SpeedUps.from_flag(cfg.fast).fused_adam
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun: choose the backend
    if cfg.lr_schedule == "cosine":
        recipe = dict(adam_beta1=GPT_BETAS[0], adam_beta2=GPT_BETAS[1], adam_epsilon=GPT_EPS,
                      learning_rate=cfg.learning_rate, lr_scheduler_type="cosine_with_min_lr",
                      lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATIO})  # fmt: skip
    else:
        recipe = dict(adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1], adam_epsilon=ADAM_EPS,
                      learning_rate=noam_peak(cfg.hidden_size, cfg.warmup_steps, cfg.lr_factor),
                      lr_scheduler_type="inverse_sqrt")  # fmt: skip
    if cfg.task in STEP_TASKS:  # lm, mlm
        pacing = dict(max_steps=cfg.max_steps, eval_strategy="steps", logging_strategy="steps",
                      save_strategy="steps", eval_steps=cfg.eval_every, logging_steps=cfg.eval_every,
                      save_steps=cfg.eval_every)  # fmt: skip
    else:
        # checkpoint-N/ to resume from (resume.py), safetensors, after every epoch
        pacing = dict(num_train_epochs=cfg.epochs, eval_strategy="epoch", logging_strategy="epoch",
                      save_strategy="epoch")  # fmt: skip
    return Seq2SeqTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=256,  # pytorch_version evaluates in batches of 256 too
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=device.type == "cuda",
        seed=cfg.seed,
        use_cpu=device.type == "cpu",
        optim="adamw_torch_fused" if fused else "adamw_torch",
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.clip_grad_norm,
        predict_with_generate=cfg.task != "lm" and cfg.arch not in ENCODER_ONLY,  # encoder-only: no decoding
        report_to="none",  # _train sets it: wandb starts on rank 0 only, once this process knows its rank
        run_name=f"huggingface-{cfg.task}",
        disable_tqdm=not progress_bars(cfg.quiet),
        ddp_backend=("nccl" if device.type == "cuda" else "gloo") if torchrun else None,
        ddp_timeout=cfg.dist_timeout,
        **recipe,
        **pacing,
        fp16=cfg.precision == "fp16",  # resolved by utils.runtime.precision.resolve
        bf16=cfg.precision == "bf16",
    )
