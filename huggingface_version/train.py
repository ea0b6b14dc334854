"""Training the Hugging Face model with the Trainer on a toy task or translation; writes results_huggingface/.

Same data (utils.data.tasks.load_task_data, same seed), same model, same recipe and same metrics
(exact match; BLEU and chrF for translation) as pytorch_version.train; what differs is who
runs the loop (see custom_trainer.py). The tokenizer is the run's own (characters or BPE) as
a PreTrainedTokenizerFast (huggingface_version/tokenization.py).

Writes under `<output_dir>/results_huggingface/`: model.safetensors, config.json (with an auto_map),
generation_config.json, the model's code (configuration.py, modeling.py, attention.py, layers.py,
stacks.py: save_pretrained copies them, huggingface_version/__init__.py says why), tokenizer.json +
tokenizer_config.json, training_args.bin, summary.json, logs/{train.log,metrics.jsonl},
training_curves.png and, with --visualize or --track_internals, visualizations/,
analysis_report.json [and internals.json] (utils.observe.monitor, shared with pytorch_version).
The folder loads without this repository:
`AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)`.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, PrinterCallback, Seq2SeqTrainingArguments

from huggingface_version.averaging import average_last_epochs
from huggingface_version.callbacks import InternalsCallback, MetricsLogCallback
from huggingface_version.convert import hf_config_of, model_config_of, pytorch_to_hf
from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer
from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
from huggingface_version.resume import (
    ResumeCallback,
    disk_errors_in,
    load_state,
    resume_checkpoint,
    save_model_atomically,
)
from huggingface_version.tokenization import to_fast_tokenizer
from utils.data.tasks import PairDataset, collate, first_example, load_task_data
from utils.fast import SpeedUps
from utils.figures.training_curves import plot_training_curves
from utils.observe.monitor import InternalsRecorder, write_analysis
from utils.observe.trace_printer import trace_example
from utils.runtime.config import RunConfig, UserError, check_precision, resolve_device
from utils.runtime.console import progress_bars
from utils.runtime.distributed import World, shutdown
from utils.runtime.resilience import atomic_write_json, ensure_writable
from utils.runtime.tracking import Tracker, add_file_log
from utils.training.recipe import ADAM_BETAS, ADAM_EPS, noam_peak

logger = logging.getLogger(__name__)


def build_hf_model(cfg: RunConfig, tokenizer) -> TutorialTransformerForConditionalGeneration:
    """A freshly initialised model of the configured shape (as pytorch_version.train.build_model)."""
    ids = {
        "pad_id": tokenizer.pad_token_id,
        "bos_id": tokenizer.bos_token_id,
        "eos_id": tokenizer.eos_token_id,
    }
    model_cfg = cfg.model_config(len(tokenizer), len(tokenizer), **ids)
    model = TutorialTransformerForConditionalGeneration(hf_config_of(model_cfg))
    return SpeedUps.from_flag(cfg.fast).plug_in(model)  # module swaps: the state dict stays HF's


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    """[(source, target)] -> [{input_ids: source + EOS, attention_mask, labels: target + EOS}]."""
    enc = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs])
    return [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"], enc["attention_mask"], enc["labels"])
    ]


def _check_precision(cfg: RunConfig, device: torch.device) -> dict:
    """--fp16 needs CUDA (utils.runtime.config); --bf16 also runs on a CPU torch supports it on."""
    check_precision(cfg, device)
    from transformers.utils import is_torch_bf16_available_on_device

    if cfg.bf16 and not is_torch_bf16_available_on_device(device.type):
        raise UserError(f"--bf16 is not supported on this {device.type} by this torch; drop --bf16")
    return {"fp16": cfg.fp16, "bf16": cfg.bf16}


def _report_to(cfg: RunConfig, out: Path, config: dict) -> str:
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


def _finish_wandb(report_to: str) -> None:
    if report_to != "wandb":
        return
    import wandb

    run = wandb.run
    if run is not None:
        offline, run_dir = run.settings.mode == "offline", run.dir
        run.finish()
        if offline:
            logger.info("wandb ran offline; upload with: wandb sync %s", Path(run_dir).parent)


def train_huggingface(cfg: RunConfig, init_from_pytorch=None) -> dict:
    """Train on the configured toy task and write results_huggingface/; returns the summary.

    `init_from_pytorch`: a pytorch_version Transformer whose (converted) weights are the
    starting point, so both versions can start from the same initialisation (--version both).
    """
    out = Path(cfg.output_dir) / "results_huggingface"
    device = resolve_device(cfg.device)
    precision = _check_precision(cfg, device)
    resume_from = resume_checkpoint(cfg, out) if cfg.resume else None
    saved = load_state(resume_from, cfg) if resume_from else None  # refused before anything is written
    args = training_arguments(cfg, out, device, precision)  # under torchrun accelerate joins the group here
    world = World(args.process_index, args.world_size, args.local_process_index)  # rank 0 writes and logs
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return _train(cfg, init_from_pytorch, out, args, resume_from, saved, world)
    finally:
        shutdown(world)


def training_arguments(cfg: RunConfig, out: Path, device: torch.device, precision: dict):
    """The run's Seq2SeqTrainingArguments: the paper's recipe in transformers' own terms.

    Adam (section 5.3): `adamw_torch` is torch.optim.AdamW, which with weight_decay 0 is Adam, betas
    (0.9, 0.98), eps 1e-9; `adamw_torch_fused` the same in one kernel (utils/fast's fused_adam).
    The Noam schedule: `inverse_sqrt` rises linearly over `warmup_steps` to `learning_rate`, then decays
    as (warmup / step)^0.5; with the schedule's peak as learning_rate it is
    utils.training.recipe.noam_schedule at every step, the first (rate 0) included.
    """
    fused = SpeedUps.from_flag(cfg.fast).fused_adam
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun: choose the backend
    return Seq2SeqTrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=256,  # pytorch_version evaluates in batches of 256 too
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=device.type == "cuda",
        seed=cfg.seed,
        use_cpu=device.type == "cpu",
        optim="adamw_torch_fused" if fused else "adamw_torch",
        adam_beta1=ADAM_BETAS[0],
        adam_beta2=ADAM_BETAS[1],
        adam_epsilon=ADAM_EPS,
        weight_decay=0.0,
        learning_rate=noam_peak(cfg.hidden_size, cfg.warmup_steps, cfg.lr_factor),
        lr_scheduler_type="inverse_sqrt",
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.clip_grad_norm,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="epoch",  # checkpoint-N/ to resume from (huggingface_version/resume.py); safetensors
        predict_with_generate=True,
        report_to="none",  # _train sets it: wandb starts on rank 0 only, once this process knows its rank
        run_name=f"huggingface-{cfg.task}",
        disable_tqdm=not progress_bars(cfg.quiet),
        ddp_backend=("nccl" if device.type == "cuda" else "gloo") if torchrun else None,
        ddp_timeout=cfg.dist_timeout,
        **precision,
    )


def _train(cfg, init_from_pytorch, out, args, resume_from, saved, world: World) -> dict:
    main = world.is_main
    if main:
        ensure_writable(out / "logs")
    log_handler = add_file_log(out / "logs" / "train.log") if main else None
    torch.manual_seed(cfg.seed)

    train_pairs, eval_pairs, data_tokenizer = load_task_data(cfg)
    tokenizer = to_fast_tokenizer(data_tokenizer)  # same ids as data_tokenizer (characters or BPE)
    model = build_hf_model(cfg, tokenizer)
    if init_from_pytorch is not None:
        expected = model_config_of(model.config)
        if init_from_pytorch.config != expected:
            raise UserError(f"init_from_pytorch has config {init_from_pytorch.config}, expected {expected}")
        model = SpeedUps.from_flag(cfg.fast).plug_in(pytorch_to_hf(init_from_pytorch).train())
    config_record = {"run": cfg.to_dict(), "model": model_config_of(model.config).to_dict()}
    report_to = _report_to(cfg, out, config_record) if main else "none"

    args.report_to = [] if report_to == "none" else [report_to]  # as __post_init__ would have listed it
    metrics_file = out / "logs" / "metrics.jsonl" if main else None  # other ranks: in memory only
    tracker = Tracker(metrics_file, history=saved["history"] if saved else None)
    callbacks = [MetricsLogCallback(tracker, cfg.stop_at_exact_match, announce=args.disable_tqdm,
                                    time_budget_minutes=cfg.time_budget_minutes)]  # fmt: skip
    # the probe: the first held-out examples, batched exactly as pytorch_version.train does
    probe = collate([PairDataset(eval_pairs[:8], data_tokenizer)[i] for i in range(min(8, len(eval_pairs)))])
    probe_src, probe_tgt = first_example(probe, data_tokenizer.pad_id)
    recorder = (
        InternalsRecorder(probe_src, probe_tgt, cfg.track_every) if cfg.track_internals and main else None
    )
    if recorder is not None:
        callbacks.append(InternalsCallback(recorder))
    trainer = TutorialSeq2SeqTrainer(
        model=model,
        args=args,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        train_dataset=encode_pairs(tokenizer, train_pairs),
        eval_dataset=encode_pairs(tokenizer, eval_pairs),
        processing_class=tokenizer,
        callbacks=callbacks,
        label_smoothing=cfg.label_smoothing,
        max_new_tokens=cfg.max_length,
        references=[t for _, t in eval_pairs],
        translation=cfg.task == "translation",  # BLEU and chrF in compute_metrics
        max_tokens=cfg.max_tokens,
        max_nonfinite_steps=cfg.max_nonfinite_steps,
        speed=SpeedUps.from_flag(cfg.fast),
    )
    resumer = ResumeCallback(cfg, trainer, tracker, recorder, saved)  # Ctrl-C / SIGTERM, tutorial_state.pt
    trainer.add_callback(resumer)
    logger.info(
        "huggingface_version: task=%s, %d train / %d eval examples, %s parameters, device=%s",
        cfg.task, len(train_pairs), len(eval_pairs), f"{model.num_parameters():,}", args.device.type,
    )  # fmt: skip

    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # no progress bar, and no log dicts either
    generation_config = copy.deepcopy(model.generation_config)  # evaluation adds its defaults to it
    if cfg.debug and main:
        trace = trace_example(
            model,
            probe_src,
            probe_tgt,
            tokenizer.convert_ids_to_tokens,
            cfg.debug_layers,
            cfg.debug_heads,
        )
        logger.info("--debug: forward pass of one example before training\n%s", trace)
    start = time.perf_counter()
    try:
        with disk_errors_in(out):  # a full disk in the Trainer's own saving: one line, not a traceback
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            resumer.raise_if_stopped(trainer.state)
            averaged = average_last_epochs(cfg, out, model, trainer, tracker.history)
            model.generation_config = generation_config
            save_model_atomically(trainer, out)  # weights, config, generation config, tokenizer files
    finally:
        resumer.stop.uninstall()
        _finish_wandb(report_to)
        tracker.finish()
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()  # the file, which removing the handler leaves open (a ResourceWarning)
    if not main:
        return {}
    wall_time = time.perf_counter() - start
    logger.info("huggingface_version: examples %r", trainer.last_predictions[:2])

    plot_training_curves(tracker.history, out / "training_curves.png", f"huggingface_version: {cfg.task}")
    last_epoch = {k: v for k, v in tracker.history[-1].items() if k.startswith("eval_")}
    best_key = "eval_bleu" if cfg.task == "translation" else "eval_exact_match"
    summary = {
        "version": "huggingface",
        "task": cfg.task,
        "final": averaged["averaged"] if averaged.get("averaged_is_final") else last_epoch,  # the saved model
        "last_epoch": last_epoch,
        **averaged,
        f"best_{best_key}": max(r[best_key] for r in tracker.history),
        "wall_time_s": wall_time,
        "parameters": model.num_parameters(),
        "report_to": report_to,
        "config": config_record,
    }
    if cfg.visualize or cfg.track_internals:
        try:  # the trained model is saved already; a drawing failure must not lose the run
            write_analysis(model, probe["src"], probe["tgt_in"], probe["tgt_out"],
                           data_tokenizer.tokens(probe_src[0]), data_tokenizer.tokens(probe_tgt[0]),
                           data_tokenizer.id_to_token, out, recorder)  # fmt: skip
        except Exception as err:
            logger.warning("huggingface_version: figures failed: %s", err, exc_info=True)
            summary["figures_error"] = f"{type(err).__name__}: {err}"
    atomic_write_json(out / "summary.json", summary)
    return summary
